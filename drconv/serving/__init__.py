"""Serving exported DRConv models with NVIDIA Triton Inference Server.

`repository`: a Triton model repository for the onnxruntime, openvino, tensorrt or python
backend (`drconv triton`); `server`: the Triton that nvidia-pytriton bundles, run here on a
python-backend repository (`drconv serve`); `load`: a load test against any running Triton
(`drconv benchmark --url`).
"""
