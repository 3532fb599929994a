"""drconv verify's region agreement: the share of pixels the runtime routes to the region PyTorch
chose, measured on a copy of the graph that also returns every region conv's guide."""

import hashlib
import json
import subprocess
import textwrap

import torch
from test_cli import DRCONV

from drconv.export import to_onnx
from drconv.models import create
from drconv.verify import verify_onnx

# A model whose two regions' guide channels nearly tie: float16 rounding flips some pixels.
NEAR_TIES = textwrap.dedent(
    """
    import torch
    from drconv import DRConv2d

    class NearTies(torch.nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.stem = torch.nn.Conv2d(3, 8, 3, padding=1)
            self.dr = DRConv2d(8, 8, 3, region_num=2)
            with torch.no_grad():
                w = self.dr.guide.weight
                w[1] = w[0] + 1e-3 * torch.randn_like(w[0])
                self.dr.guide.bias[1] = self.dr.guide.bias[0]

        def forward(self, x):
            return self.dr(self.stem(x))

    def build():
        model = NearTies().eval()
        with torch.no_grad():  # weights a float16 export holds exactly
            for p in model.parameters():
                p.copy_(p.half().float())
        return model
    """
)


def test_a_float32_custom_export_agrees_everywhere_and_its_file_is_untouched(tmp_path):
    model = create("drconv-shufflenetv2-0.5x").eval()
    path = to_onnx(model, torch.randn(1, 3, 64, 64), tmp_path / "zoo.onnx")
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    report = verify_onnx(path, model, batch=2, size=96)
    assert report.ok and report.regions_note is None
    assert len(report.regions) == 32  # two region convs in each of the 16 blocks
    assert {r.agreement for r in report.regions} == {1.0}
    assert all(r.min_margin is not None and r.min_margin >= 0 for r in report.regions)
    assert report.regions[0].layer == "stage1_block1.conva_right.conv" and report.regions[0].pixels == 2 * 24 * 24
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["zoo.onnx"]


def test_a_float16_export_with_near_ties_flips_regions_and_verify_fails(tmp_path):
    (tmp_path / "near_ties.py").write_text(NEAR_TIES)
    import sys

    sys.path.insert(0, str(tmp_path))
    try:
        import near_ties
    finally:
        sys.path.remove(str(tmp_path))
    model = near_ties.build()
    path = to_onnx(model.half(), torch.randn(1, 3, 32, 32).half(), tmp_path / "fp16.onnx", mode="portable")
    model = model.float()
    report = verify_onnx(path, model, batch=2, size=48, atol=2e-2, rtol=2e-2)
    assert report.outputs_ok  # the outputs' errors alone look fine in float16 ...
    (layer,) = report.regions
    assert layer.layer == "dr" and 0.9 < layer.agreement < 1.0  # ... but pixels took the other filter
    assert layer.min_margin < 1e-3 and not report.ok

    common = ["verify", str(path), "--model", "near_ties:build", "--atol", "2e-2", "--rtol", "2e-2", "--size", "48"]
    result = subprocess.run([DRCONV, *common], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "to another region than PyTorch (agreement below 0.999)" in result.stderr
    loose = subprocess.run(
        [DRCONV, *common, "--min-agreement", "0", "--json"], capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert loose.returncode == 0, loose.stderr
    doc = json.loads(loose.stdout)
    assert doc["ok"] and doc["min_agreement"] == 0 and doc["regions"][0]["agreement"] == layer.agreement


def test_pixels_the_official_softmax_rule_routes_otherwise_are_counted():
    from drconv.verify import _agreement

    guide = torch.zeros(1, 2, 2, 3)
    guide[0, 1, 0, 0] = guide[0, 1, 1, 2] = 1e-8  # argmax: region 1; a float32 softmax ties them: region 0
    guide[0, 1, 0, 1] = 1.0  # a clear win for region 1 under both rules
    regions, note, _ = _agreement([("dr", guide)], [("n", "t")], {"t": guide.numpy()})
    assert note is None and regions[0].agreement == 1.0
    assert regions[0].softmax_differs == 2 and regions[0].to_dict()["softmax_differs"] == 2
