"""The model.py of a python-backend Triton model (`drconv triton --backend python`, `drconv serve`):
model.onnx beside it, run in ONNX Runtime with drconv's library through `drconv.runtime.ort`.

Triton hands `execute` every request its dynamic batcher gathered; requests of one shape run
as one batch, and each gets its own rows back. A request that fails gets its own error, and
the others their outputs.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils  # provided by Triton's python backend stub

from drconv.runtime import ort


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        folder = Path(args["model_repository"]) / args["model_version"]
        self.session = ort.session(folder / "model.onnx")
        self.inputs = [i["name"] for i in config["input"]]
        self.outputs = [o["name"] for o in config["output"]]
        self.batched = int(config.get("max_batch_size", 0)) > 0

    def execute(self, requests: list) -> list:
        arrays = [[pb_utils.get_input_tensor_by_name(r, name).as_numpy() for name in self.inputs] for r in requests]
        responses: list = [None] * len(requests)
        groups: dict[tuple, list[int]] = {}
        for index, tensors in enumerate(arrays):  # unbatched requests run one by one
            key = tuple((a.shape[1:], a.dtype.str) for a in tensors) if self.batched else (index,)
            groups.setdefault(key, []).append(index)
        for members in groups.values():
            try:
                feed = {
                    name: np.concatenate([arrays[m][i] for m in members]) if len(members) > 1 else arrays[members[0]][i]
                    for i, name in enumerate(self.inputs)
                }
                results = self.session.run(self.outputs, feed)
            except Exception as exc:  # this group's requests fail, the others still get their outputs
                error = pb_utils.TritonError(f"drconv: {str(exc).strip().splitlines()[0]}")
                for m in members:
                    responses[m] = pb_utils.InferenceResponse(output_tensors=[], error=error)
                continue
            rows = np.cumsum([0] + [arrays[m][0].shape[0] for m in members]) if self.batched else None
            for j, m in enumerate(members):
                part = slice(rows[j], rows[j + 1]) if rows is not None else slice(None)
                tensors = [
                    pb_utils.Tensor(n, np.ascontiguousarray(r[part]))
                    for n, r in zip(self.outputs, results, strict=True)
                ]
                responses[m] = pb_utils.InferenceResponse(output_tensors=tensors)
        return responses
