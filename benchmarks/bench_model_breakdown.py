"""Where a DRConv model's time goes in ONNX Runtime: its custom export cut down step by step.

Each variant removes one part of what the region convs cost, and all are timed side by
side in one process (alternating calls) against the plain twin:

- `export`: the custom export as `drconv export` writes it (MixtureRegionConv2d nodes that
  route themselves, node version 4);
- `graph-routing`: the same with each node's routing back in the graph (ReduceMean, Gemm,
  Sigmoid, Reshape feeding its coefficients, `rewrite.expand_routing`: version 3);
- `graph-mixture`: the same with each mixture expanded into the graph (MatMul + Reshape
  feeding a RegionConv2d, `rewrite.expand_mixture`), as exports were before node version 3;
  the variants below cut this one down:
- `fixed-z`: the mixture coefficients z fed as graph inputs, so the routing (ReduceMean,
  Gemm + Sigmoid) is gone and the mixture MatMul still runs (inputs are not constant-folded);
- `fixed-filters`: each node's filters fed as constants: routing and mixture gone;
- `fixed-both`: filters and guides constant: the guides' masknet convs and Resizes gone too;
- `one-region`: as `fixed-both` with R = 1 (every pixel in region 0): the node doing a dense
  conv, with the NCHWc reorders ONNX Runtime puts around it;
- `dense`: each node replaced by a Conv (+ Relu) of the same shape: the twin's structure
  with the export's other nodes.

Constants are the values of one run on the benchmark input, so each variant computes
what the full graph does on that input. Differences between neighbouring rows are the
costs of the parts; `python benchmarks/bench_model_breakdown.py [--model M] [--batch B]`.
"""

from __future__ import annotations

import argparse
import copy
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import torch
from _timing import alternate, print_table
from onnx import TensorProto, helper, numpy_helper
from rich.console import Console

from drconv import models
from drconv.benchmark.env import cpu_model
from drconv.export import rewrite
from drconv.export.onnx import CUSTOM_DOMAIN, CUSTOM_OP, to_onnx
from drconv.runtime.ort import session

REGION_CONV = CUSTOM_OP


def _producers(graph: onnx.GraphProto) -> dict[str, onnx.NodeProto]:
    return {out: node for node in graph.node for out in node.output}


def _mixture(graph: onnx.GraphProto, node: onnx.NodeProto) -> onnx.NodeProto:
    """The MatMul whose product a node's filters are: filters = Reshape(MatMul(z, basis))."""
    producers = _producers(graph)
    return producers[producers[node.input[1]].input[0]]


def _values(model: onnx.ModelProto, names: list[str], x: np.ndarray, threads: int, tmp: Path) -> dict[str, np.ndarray]:
    probe = copy.deepcopy(model)
    probe.graph.output.extend(helper.make_value_info(name, onnx.TypeProto()) for name in names)
    path = tmp / "probe.onnx"
    onnx.save(probe, str(path))
    sess = session(path, threads=threads, spinning=False)  # side by side: idle pools must not spin
    return dict(zip(names, sess.run(names, {sess.get_inputs()[0].name: x}), strict=True))


def _prune(graph: onnx.GraphProto) -> None:
    """Drop nodes nothing reads (ONNX Runtime would run them)."""
    while True:
        used = {name for node in graph.node for name in node.input} | {out.name for out in graph.output}
        kept = [node for node in graph.node if any(out in used for out in node.output)]
        if len(kept) == len(graph.node):
            return
        del graph.node[:]
        graph.node.extend(kept)


def _constant(graph: onnx.GraphProto, name: str, value: np.ndarray) -> str:
    if name not in {init.name for init in graph.initializer}:
        graph.initializer.append(numpy_helper.from_array(value, name))
    return name


def _variant(model: onnx.ModelProto, kind: str, values: dict[str, np.ndarray], feeds: dict[str, np.ndarray]):
    out = copy.deepcopy(model)
    graph = out.graph
    nodes = []
    for node in graph.node:
        if node.op_type != REGION_CONV:
            nodes.append(node)
            continue
        filters, guide = values[node.input[1]], values[node.input[2]]
        if kind == "fixed-z":
            mixture = _mixture(graph, node)
            name = mixture.input[0] + ":fed"
            feeds[name] = values[mixture.input[0]]
            graph.input.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(feeds[name].shape)))
            mixture.input[0] = name
        if kind == "one-region":
            filters, guide = filters[:, :1], np.zeros_like(guide[:, :1])
        if kind in ("fixed-filters", "fixed-both", "one-region"):
            node.input[1] = _constant(graph, f"{node.input[1]}:{kind}", filters)
        if kind in ("fixed-both", "one-region"):
            node.input[2] = _constant(graph, f"{node.input[2]}:{kind}", guide)
        if kind == "dense":
            # IHWO filters [N, R, C_in, kh, kw, C_out]: region 0 of sample 0 as an OIHW weight.
            weight = np.ascontiguousarray(np.moveaxis(filters[0, 0], -1, 0))
            inputs = [node.input[0], _constant(graph, f"{node.input[1]}:dense", weight), *node.input[3:4]]
            pre_relu = node.output[0] + ":conv"
            nodes += [
                helper.make_node("Conv", inputs, [pre_relu]),
                helper.make_node("Relu", [pre_relu], list(node.output)),
            ]
            continue
        nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    _prune(graph)
    return out


VARIANTS = ("graph-mixture", "fixed-z", "fixed-filters", "fixed-both", "one-region", "dense")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="drconv-shufflenetv2-0.5x", help="a built-in DRConv model with a twin")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--iters", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=30)
    args = parser.parse_args()
    twin_name = args.model.removeprefix("drconv-")
    shape = (args.batch, 3, args.size, args.size)
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)

    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        paths = {
            name: to_onnx(models.create(name).eval(), torch.zeros(shape), tmp / f"{name}.onnx")
            for name in (args.model, twin_name)
        }
        model = onnx.load(str(paths[args.model]))
        rewrite.expand_mixture(model, CUSTOM_DOMAIN, REGION_CONV)
        nodes = [node for node in model.graph.node if node.op_type == REGION_CONV]
        names = [node.input[i] for node in nodes for i in (1, 2)] + [_mixture(model.graph, n).input[0] for n in nodes]
        values = _values(model, list(dict.fromkeys(names)), x, args.threads, tmp)

        feeds: dict[str, np.ndarray] = {}
        runs: dict[str, Callable[[], object]] = {
            "twin": _runner(paths[twin_name], x, feeds, args.threads),
            "export": _runner(paths[args.model], x, feeds, args.threads),
        }
        routed = onnx.load(str(paths[args.model]))
        rewrite.expand_routing(routed, CUSTOM_DOMAIN)
        onnx.save(routed, str(tmp / "graph-routing.onnx"))
        runs["graph-routing"] = _runner(tmp / "graph-routing.onnx", x, feeds, args.threads)
        for kind in VARIANTS:
            variant = model if kind == "graph-mixture" else _variant(model, kind, values, feeds)
            path = tmp / f"{kind}.onnx"
            onnx.save(variant, str(path))
            runs[kind] = _runner(path, x, feeds, args.threads)
        times = alternate(runs, args.iters, args.warmup)
    print_table(
        f"{args.model}, batch {args.batch}, {args.size}x{args.size}, {args.threads} threads, cut down",
        times,
        "twin",
        "x twin",
    )
    Console().print(f"CPU: {cpu_model()}")


def _runner(path: Path, x: np.ndarray, feeds: dict[str, np.ndarray], threads: int) -> Callable[[], object]:
    sess = session(path, threads=threads, spinning=False)  # side by side: idle pools must not spin
    inputs = {i.name: feeds.get(i.name, x) for i in sess.get_inputs()}
    return lambda: sess.run(None, inputs)


if __name__ == "__main__":
    main()
