"""Makes export_reference.npz: outputs of the zoo and drconv-tiny exports as drconv wrote them
before the exporter wrote the nodes directly (commit 7b65bb0), for tests/test_export_reference.py.

    python tests/data/export_reference.py tests/data/export_reference.npz

Each model is `reference_model(name)` (seeded weights), run on `reference_input(name)`; the
file holds the input, PyTorch's output and the custom export's outputs in ONNX Runtime and
OpenVINO (f32), and a checksum of the weights, so that a test can tell a changed model from a
changed export.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

MODELS = ("drconv-shufflenetv2-0.5x", "drconv-tiny")


def reference_model(name: str) -> torch.nn.Module:
    from drconv.models import create

    torch.manual_seed(0)
    model = create(name)
    with torch.no_grad():  # weights large enough that the logits spread out
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def reference_input(name: str) -> torch.Tensor:
    return torch.randn(2, 3, 96, 64, generator=torch.Generator().manual_seed(1))


def checksum(model: torch.nn.Module) -> float:
    return float(sum(t.double().sum() for t in model.state_dict().values() if t.is_floating_point()))


def main(out: Path) -> None:
    from drconv.export import to_onnx
    from drconv.runtime import openvino, ort

    arrays = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in MODELS:
            model, x = reference_model(name), reference_input(name)
            path = to_onnx(model, torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(2)),
                           Path(tmp) / f"{name}.onnx")  # fmt: skip
            with torch.no_grad():
                arrays[f"{name}/torch"] = model(x).numpy()
            arrays[f"{name}/input"] = x.numpy()
            arrays[f"{name}/ort"] = ort.session(path, threads=2).run(None, {"input": x.numpy()})[0]
            arrays[f"{name}/openvino"] = openvino.compile(path, threads=2)([x.numpy()])[0]
            arrays[f"{name}/checksum"] = np.array(checksum(model))
    np.savez_compressed(out, **arrays)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
