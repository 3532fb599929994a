// PyTorch binding of the shared CUDA kernel (plugins/common/region_conv_cuda.cu), built
// just in time by drconv.cuda_kernel where torch has CUDA: the GPU tests and
// benchmarks/bench_cuda.py run the exact kernel TensorRT and ONNX Runtime run.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-parameter"
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/csrc/utils/pybind.h>
#pragma GCC diagnostic pop

#include <cuda_fp16.h>

#include <vector>

#include "region_conv_cuda.h"

namespace {

at::Tensor region_conv_cuda(const at::Tensor& x, const at::Tensor& filters, const at::Tensor& guide,
                            std::vector<int64_t> stride, std::vector<int64_t> padding, std::vector<int64_t> dilation) {
  TORCH_CHECK_VALUE(x.is_cuda() && filters.is_cuda() && guide.is_cuda(), "region_conv_cuda: inputs must be on CUDA");
  TORCH_CHECK_VALUE(x.dim() == 4 && filters.dim() == 6 && guide.dim() == 4, "region_conv_cuda: ranks 4, 6, 4");
  TORCH_CHECK_VALUE(x.scalar_type() == filters.scalar_type() && x.scalar_type() == guide.scalar_type(),
                    "region_conv_cuda: one dtype for all inputs");
  TORCH_CHECK_VALUE(x.scalar_type() == at::kFloat || x.scalar_type() == at::kHalf,
                    "region_conv_cuda: float32 or float16");
  TORCH_CHECK_VALUE(stride.size() == 2 && padding.size() == 2 && dilation.size() == 2,
                    "region_conv_cuda: stride, padding, dilation are pairs");
  drconv::RegionConvShape s;
  s.n = x.size(0), s.c_in = x.size(1), s.h = x.size(2), s.w = x.size(3);
  s.regions = filters.size(1), s.c_out = filters.size(2), s.kh = filters.size(4), s.kw = filters.size(5);
  s.stride_h = stride[0], s.stride_w = stride[1], s.pad_h = padding[0], s.pad_w = padding[1];
  s.dil_h = dilation[0], s.dil_w = dilation[1];
  const std::string bad = drconv::validate(s);
  TORCH_CHECK_VALUE(bad.empty(), "region_conv_cuda: ", bad);
  TORCH_CHECK_VALUE(filters.size(0) == s.n && filters.size(3) == s.c_in && guide.size(0) == s.n &&
                        guide.size(1) == s.regions && guide.size(2) == s.h_out() && guide.size(3) == s.w_out(),
                    "region_conv_cuda: filters/guide do not fit x");
  const c10::cuda::CUDAGuard device(x.device());
  const at::Tensor xc = x.contiguous(), fc = filters.contiguous(), gc = guide.contiguous();
  at::Tensor y = at::empty({s.n, s.c_out, s.h_out(), s.w_out()}, x.options());
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  cudaError_t err;
  if (x.scalar_type() == at::kHalf) {
    err = drconv::region_conv_cuda_forward<__half>(
        reinterpret_cast<const __half*>(xc.data_ptr<at::Half>()), reinterpret_cast<const __half*>(fc.data_ptr<at::Half>()),
        reinterpret_cast<const __half*>(gc.data_ptr<at::Half>()), reinterpret_cast<__half*>(y.data_ptr<at::Half>()), s,
        stream);
  } else {
    err = drconv::region_conv_cuda_forward<float>(xc.data_ptr<float>(), fc.data_ptr<float>(), gc.data_ptr<float>(),
                                                  y.data_ptr<float>(), s, stream);
  }
  TORCH_CHECK(err == cudaSuccess, "region_conv_cuda: kernel launch failed: ", cudaGetErrorString(err));
  return y;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &region_conv_cuda, "Region-wise conv with the shared CUDA kernel");
}
