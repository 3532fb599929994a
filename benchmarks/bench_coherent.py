"""A zoo model against its plain twin in ONNX Runtime with the regions a trained model has:
coherent blobs instead of the near pixel-by-pixel routing of default initialisation.

    python benchmarks/bench_coherent.py [--model drconv-shufflenetv2-0.5x] [--batch 1]
        [--size 224] [--threads 2] [--iters 200] [--json FILE]

The custom export is timed twice: as it is (random init: the conservative figure) and with
every guide made coherent. The guide a node reads becomes its masknet's output scaled by
1e-3 plus a fixed pattern (a grid of R rectangles, 2 rows of R / 2; a stride-2 block's
resized guide follows), so the masknet convolutions still run and only a Mul and an Add per
guide are added. Both graphs and the twin run through drconv.runtime.ort.session, timed in
alternation; the table gives p50s and the ratios to the twin, and for both graphs the share
of pixels routed to the region of their right neighbour, averaged over the guides (at the
7x7 maps of 224x224 a rectangle is one or two pixels wide).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import alternate, print_table

from drconv import contract
from drconv.benchmark.report import write_json
from drconv.export import rewrite, to_onnx
from drconv.model_names import TWINS
from drconv.models import create
from drconv.runtime.ort import session


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="drconv-shufflenetv2-0.5x", help="a zoo model with a twin")
    parser.add_argument("--batch", type=int, default=1, help="N of the input")
    parser.add_argument("--size", type=int, default=224, help="H = W of the input")
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads")
    parser.add_argument("--iters", type=int, default=200, help="timed calls per graph")
    parser.add_argument("--json", type=Path, default=None, help="write the p50s and ratios here")
    return parser.parse_args(argv)


def pattern(regions: int, height: int, width: int) -> np.ndarray:
    """[1, R, H, W] logits whose argmax is a grid of R rectangles (2 rows of R / 2 where R is even)."""
    rows_of_cells = 2 if regions % 2 == 0 and regions > 1 else 1
    per_row = regions // rows_of_cells
    rows, cols = np.mgrid[0:height, 0:width]
    cell = np.minimum(rows * rows_of_cells // height, rows_of_cells - 1) * per_row + np.minimum(
        cols * per_row // width, per_row - 1
    )
    logits = np.zeros((1, regions, height, width), np.float32)
    for r in range(regions):
        logits[0, r][cell == r] = 1.0
    return logits


def _guides(model: onnx.ModelProto) -> list[str]:
    """The guides the region-conv nodes read, each once, in graph order; a guide resized from
    another (a stride-2 block's second region conv) is left to follow the one it comes from."""
    producers = {o: n for n in model.graph.node for o in n.output}
    names = []
    for node in model.graph.node:
        if node.domain == contract.DOMAIN:
            at = contract.MIXTURE.guide if node.op_type == contract.MIXTURE.name else contract.REGION_CONV.guide
            producer = producers.get(node.input[at])
            if producer is None or producer.op_type != "Resize":
                names.append(node.input[at])
    return list(dict.fromkeys(names))


def guide_values(model: onnx.ModelProto, x: np.ndarray) -> dict[str, np.ndarray]:
    """Every guide's value on `x` (the graph run with the guides as extra outputs)."""
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    names = _guides(probe)
    probe.graph.output.extend(helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in names)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "guides.onnx"
        onnx.save(probe, path)
        values = session(path, threads=1, blocked_layout=False).run(names, {"input": x})
    return dict(zip(names, values, strict=True))


def coherent(model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]]) -> onnx.ModelProto:
    """The graph with every guide of `shapes` replaced by guide * 1e-3 + pattern, for all its readers."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    renamed = {}
    for guide, shape in shapes.items():
        name = f"{guide}.coherent"
        graph.initializer.append(numpy_helper.from_array(pattern(shape[1], shape[2], shape[3]), f"{name}.pattern"))
        graph.initializer.append(numpy_helper.from_array(np.array(1e-3, np.float32), f"{name}.scale"))
        graph.node.append(helper.make_node("Mul", [guide, f"{name}.scale"], [f"{name}.scaled"]))
        graph.node.append(helper.make_node("Add", [f"{name}.scaled", f"{name}.pattern"], [name]))
        renamed[guide] = name
    for node in graph.node:  # the guides' readers: the region convs, and the Resizes of resized guides
        for i, name in enumerate(node.input):
            if name in renamed and node.op_type not in ("Mul", "Add"):
                node.input[i] = renamed[name]
    rewrite.topological_sort(out)  # the Muls and Adds were appended after their readers
    return out


def same_as_right_neighbour(guides: dict[str, np.ndarray]) -> float:
    """Share of pixels routed to the region of their right neighbour, averaged over the guides."""
    shares = []
    for value in guides.values():
        region = value.argmax(axis=1)
        shares.append(float((region[..., 1:] == region[..., :-1]).mean()))
    return float(np.mean(shares))


def main(argv: list[str]) -> None:
    args = parse(argv)
    if args.model not in TWINS:
        raise SystemExit(f"{args.model} has no twin (models with one: {', '.join(TWINS)})")
    torch.manual_seed(0)
    x = torch.randn(args.batch, 3, args.size, args.size, generator=torch.Generator().manual_seed(0))
    with tempfile.TemporaryDirectory(prefix="drconv-coherent-") as tmp:
        tmp = Path(tmp)
        random_init = to_onnx(create(args.model).eval(), x, tmp / "random.onnx")
        twin = to_onnx(create(TWINS[args.model]).eval(), x, tmp / "twin.onnx")
        proto = onnx.load(random_init)
        guides = guide_values(proto, x.numpy())
        coherent_proto = coherent(proto, {name: value.shape for name, value in guides.items()})
        coherent_path = tmp / "coherent.onnx"
        onnx.save(coherent_proto, coherent_path)
        neighbours = {
            "random-init": same_as_right_neighbour(guides),
            "coherent": same_as_right_neighbour(guide_values(coherent_proto, x.numpy())),
        }
        feed = {"input": x.numpy()}
        graphs = {"random-init": random_init, "coherent": coherent_path, "twin": twin}
        sessions = {name: session(path, threads=args.threads) for name, path in graphs.items()}
        runs = {name: (lambda s=s: s.run(None, feed)) for name, s in sessions.items()}
        times = alternate(runs, args.iters, warmup=5)
    title = f"{args.model} vs {TWINS[args.model]}, input {args.batch}x3x{args.size}x{args.size}, {args.threads} threads"
    print_table(title, times, "twin", "x twin")
    p50 = {name: float(np.median(t)) * 1e3 for name, t in times.items()}
    for name, share in neighbours.items():
        print(f"{name}: p50 {p50[name]:.3f} ms, {p50[name] / p50['twin']:.2f}x twin; pixels routed as their right "
              f"neighbour {share:.1%}")  # fmt: skip
    if args.json is not None:
        document = {"model": args.model, "batch": args.batch, "size": args.size, "threads": args.threads,
                    "p50_ms": p50, "ratio_to_twin": {k: v / p50["twin"] for k, v in p50.items()},
                    "same_region_as_right_neighbour": neighbours}  # fmt: skip
        write_json(args.json, document)


if __name__ == "__main__":
    main(sys.argv[1:])
