# Quick start: `make demo` and `make test`; each sets everything up first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.drconv-installed
BUILD  := build/plugins

.PHONY: setup demo test plugins bench lint clean

setup: $(STAMP)

# CPU path: exact pins (requirements/cpu.txt; torch==2.13.0 is the CPU wheel), then
# drconv itself, editable: setup.py compiles drconv._C against that torch and builds the
# plugin libraries with CMake in build/plugins, into drconv/lib.
$(STAMP): pyproject.toml setup.py requirements/cpu.txt drconv/csrc/*.cpp drconv/csrc/*.h plugins/common/*.h plugins/CMakeLists.txt
	@test -n "$(PYTHON)" || { echo "error: no python3.11 or python3 on PATH; install Python 3.11"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements/cpu.txt
	DRCONV_WERROR=1 $(PY) -m pip install --quiet --no-build-isolation --no-deps -e .
	@touch $@

# Native libraries (C++/CUDA), rebuilt after a change to plugins/: libdrconv_onnxruntime.so,
# libdrconv_openvino.so (against the venv's openvino), with nvcc also libdrconv_tensorrt.so,
# into drconv/lib; their test programs stay in
# build/plugins. The headers they compile against (ONNX Runtime 1.21's C API, TensorRT
# 10's) are fetched once into build/plugins/_deps unless ONNXRUNTIME_INCLUDE_DIR /
# TensorRT_INCLUDE_DIR (or TENSORRT_ROOT) say where.
plugins: setup
	cmake -S plugins -B $(BUILD) -DCMAKE_BUILD_TYPE=Release -DPython3_EXECUTABLE=$(abspath $(PY)) \
		-DDRCONV_LIBRARY_DIR=$(abspath drconv/lib) > /dev/null
	cmake --build $(BUILD) -j 2

demo: setup plugins
	@echo "==> environment and built libraries"
	$(VENV)/bin/drconv info
	@echo "==> drconv-tiny: one forward pass on a random 224x224 image"
	$(VENV)/bin/drconv summary --model drconv-tiny --input-shape 1,3,224,224
	@echo "==> export drconv-tiny to ONNX: custom node, then standard ops only; verify each against PyTorch"
	@mkdir -p build/demo
	$(VENV)/bin/drconv export -o build/demo/drconv-tiny.onnx --verify
	$(VENV)/bin/drconv export -o build/demo/drconv-tiny-portable.onnx --mode portable --verify
	@echo "==> the custom export again, in OpenVINO with drconv's extension"
	$(VENV)/bin/drconv verify build/demo/drconv-tiny.onnx --runtime openvino
	@echo "==> drconv-tiny, 1x3x224x224: PyTorch eager vs the two exported files in ONNX Runtime"
	$(VENV)/bin/drconv benchmark drconv-tiny build/demo/drconv-tiny.onnx build/demo/drconv-tiny-portable.onnx \
		--backend torch --threads 2 --iters 20
	@echo "==> the paper's model: drconv-shufflenetv2-0.5x against its plain twin shufflenetv2-0.5x, torch and ONNX Runtime"
	$(VENV)/bin/drconv summary --model drconv-shufflenetv2-0.5x --input-shape 1,3,224,224
	$(VENV)/bin/drconv benchmark drconv-shufflenetv2-0.5x --baseline twin --backend torch,ort-custom --threads 2 --iters 20
	@echo "==> one region conv, N=1 C=K=64 56x56 k=3 R=8: every backend against the dense-conv bound"
	$(VENV)/bin/drconv benchmark --layer 64x56x56 --regions 8 --kernel 3 --threads 2 --iters 50 \
		--json build/demo/layer.json --plot build/demo/layer.png
	@echo "==> the paper's model's regions over a photograph (matplotlib's sample grace_hopper.jpg), the model as it is"
	$(VENV)/bin/drconv regions "$$($(PY) -c "import matplotlib.cbook as c; print(c.get_sample_data('grace_hopper.jpg', asfileobj=False))")" \
		-m drconv-shufflenetv2-0.5x -o build/demo/regions.png --json build/demo/regions.json

# One worker per core (pytest-xdist), each test file on one worker: its module fixtures build
# once and the README's blocks run in order. A bare `pytest` runs serially.
test: setup plugins
	$(PY) -m pytest --numprocesses=auto --maxprocesses=4 --dist=loadfile

# One region conv against its dense bound in every backend (benchmarks/ has the sweeps).
bench: setup plugins
	$(VENV)/bin/drconv benchmark --layer 64x56x56 --regions 8 --kernel 3 --threads 2 --iters 200

lint: setup
	$(VENV)/bin/ruff check drconv tests benchmarks setup.py
	$(VENV)/bin/ruff format --check drconv tests benchmarks setup.py

clean:
	rm -rf $(VENV) build dist drconv/_C*.so drconv/lib drconv.egg-info
