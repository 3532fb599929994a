"""Runtimes that run exported DRConv models: ONNX Runtime (ort), OpenVINO (openvino), TensorRT (trt)."""
