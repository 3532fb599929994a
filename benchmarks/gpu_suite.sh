#!/usr/bin/env bash
# Every GPU check in one go, on a machine with an NVIDIA GPU, PyTorch with CUDA and drconv's
# Python dependencies already installed, jsonschema included (nothing is downloaded):
#   1. install drconv (editable, against that torch: drconv._C and the plugin libraries, CUDA
#      included) and build the CUDA kernel's extension. The device has no network: carry
#      build/plugins/_deps (the ONNX Runtime and TensorRT headers `make setup` fetched here);
#   2. the GPU-marked tests;
#   3. benchmarks/bench_cuda.py: the kernel against cuDNN, N = 1, 8, 32, R = 1..16, float16 and float32;
#   4. `drconv benchmark --device cuda`: the layer and drconv-tiny, batch 1 and 8;
#   5. compute-sanitizer memcheck over the kernel's correctness checks, where it works.
# Usage: benchmarks/gpu_suite.sh OUTDIR [--baseline DIR]   (DIR: an older kernel to compare)
# Writes OUTDIR/suite.log, OUTDIR/install.log, OUTDIR/bench_cuda.json and OUTDIR/{layer,model}-b{1,8}.json;
# exits non-zero if any step failed, after running the others.
set -u
out=${1:?usage: benchmarks/gpu_suite.sh OUTDIR [--baseline DIR]}
shift
mkdir -p "$out"
cd "$(dirname "$0")/.."
exec > >(tee "$out/suite.log") 2>&1
export PYTHONUNBUFFERED=1 MAX_JOBS=${MAX_JOBS:-$(nproc)}
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-$(python3 -c 'import torch; print("%d.%d" % torch.cuda.get_device_capability())')}
# The plugin libraries' CUDA code for this GPU only (CMake reads CUDAARCHS): a fifth of the build.
export CUDAARCHS=${CUDAARCHS:-${TORCH_CUDA_ARCH_LIST//./}}
failed=()
step() {  # step NAME SECONDS COMMAND...: run with a time limit, record a failure, go on
  local name=$1 limit=$2
  shift 2
  echo "==> $name ($(date -u +%T))"
  timeout "$limit" "$@" || { echo "!! $name failed (exit $?)"; failed+=("$name"); }
}

python3 -c 'import jsonschema' 2> /dev/null ||
  echo "!! jsonschema is not importable: the benchmark test will fail (pip install jsonschema, or carry its wheels)"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv
python3 -c 'import torch, sys; print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda)'

# The two extension builds and the install compile at once.
python3 -c 'from drconv.cuda_kernel import extension; extension()' > "$out/.kernel-build.log" 2>&1 &
kernel_build=$!
baseline_build=
if [ $# -ge 2 ] && [ "$1" = --baseline ]; then
  python3 -c "import sys; sys.path.insert(0, 'benchmarks'); from pathlib import Path; \
from bench_cuda import baseline_kernel; baseline_kernel(Path('$2'))" > "$out/.baseline-build.log" 2>&1 &
  baseline_build=$!
fi
if ! python3 -m pip install --quiet --no-build-isolation --no-deps -e . > "$out/install.log" 2>&1; then
  # drconv needs its C++ op (drconv._C) to import at all: nothing below can run without it.
  grep -m 20 -i -e 'error' -e 'fatal' "$out/install.log"
  echo "FAILED: pip install -e . (log: $out/install.log; without network, carry build/plugins/_deps" \
    "from a machine that fetched the headers, or set ONNXRUNTIME_INCLUDE_DIR)"
  exit 1
fi
# Wait for these by pid: a bare `wait` would also wait for the tee above, forever.
if ! wait $kernel_build; then
  tail -40 "$out/.kernel-build.log"
  echo "FAILED: the CUDA kernel did not build; nothing else can run"
  exit 1
fi
if [ -n "$baseline_build" ] && ! wait "$baseline_build"; then
  tail -20 "$out/.baseline-build.log"
  failed+=("baseline build")
fi
python3 -c 'import drconv.ops as o; print("drconv._C built:", o._C is not None)'

# A GPU image may lack OpenVINO (CPU-only, pinned on the CPU path): its module cannot even be collected.
skip=()
python3 -c 'import openvino' 2> /dev/null || { echo "OpenVINO is not importable: tests/test_openvino.py left out"; skip=(--ignore=tests/test_openvino.py); }
step "GPU tests" 300 python3 -m pytest -m gpu -q -p no:cacheprovider "${skip[@]}" tests
step "bench_cuda" 300 python3 benchmarks/bench_cuda.py --dtype float16 float32 --batch 1 8 32 --regions 1 2 4 8 16 --rounds 15 \
  --json "$out/bench_cuda.json" "$@"
for b in 1 8; do
  step "layer b$b" 120 drconv benchmark --layer 64x56x56 --regions 8 --kernel 3 --device cuda --batch "$b" \
    --iters 200 --json "$out/layer-b$b.json"
  step "model b$b" 120 drconv benchmark --device cuda --batch "$b" --iters 100 --json "$out/model-b$b.json"
done
if command -v compute-sanitizer > /dev/null; then
  step "memcheck" 150 compute-sanitizer --tool memcheck --error-exitcode 9 python3 -c "
import sys, torch; sys.path.insert(0, 'benchmarks')
from bench_cuda import check; from drconv.cuda_kernel import region_conv_cuda
for dtype, tol in ((torch.float32, 1e-5), (torch.float16, 1e-2)):
    err = check({'drconv': region_conv_cuda}, dtype, seed=1, cpu_reference=True)['drconv']
    print(dtype, 'relative error', err); assert err < tol"
fi
rm -f "$out"/.*.log
if [ ${#failed[@]} -gt 0 ]; then
  echo "FAILED: ${failed[*]}"
  exit 1
fi
echo "all GPU checks passed"
