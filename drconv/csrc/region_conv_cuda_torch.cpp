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

#include <string>
#include <vector>

#include "region_conv_checks.h"
#include "region_conv_cuda.h"

namespace {

drconv::RegionConvShape checked(const at::Tensor& x, const at::Tensor& filters, const at::Tensor& guide,
                                const std::vector<int64_t>& stride, const std::vector<int64_t>& padding,
                                const std::vector<int64_t>& dilation) {
  TORCH_CHECK_VALUE(x.is_cuda() && filters.is_cuda() && guide.is_cuda(), "region_conv_cuda: inputs must be on CUDA");
  TORCH_CHECK_VALUE(x.scalar_type() == at::kFloat || x.scalar_type() == at::kHalf,
                    "region_conv_cuda: float32 or float16");
  const drconv::RegionConvShape s = drconv::checked_shape(x, filters, guide, stride, padding, dilation);
  const std::string unsupported = drconv::cuda_shape_error(s);
  TORCH_CHECK_VALUE(unsupported.empty(), "region_conv_cuda: ", unsupported);
  return s;
}

at::Tensor workspace_for(const drconv::RegionConvShape& s, const at::Tensor& like) {
  return at::empty({static_cast<int64_t>(drconv::region_conv_cuda_workspace_size(s))}, like.options().dtype(at::kByte));
}

at::Tensor region_conv_cuda(const at::Tensor& x, const at::Tensor& filters, const at::Tensor& guide,
                            std::vector<int64_t> stride, std::vector<int64_t> padding, std::vector<int64_t> dilation) {
  const drconv::RegionConvShape s = checked(x, filters, guide, stride, padding, dilation);
  const c10::cuda::CUDAGuard device(x.device());
  const at::Tensor xc = x.contiguous(), fc = filters.contiguous(), gc = guide.contiguous();
  at::Tensor y = at::empty({s.n, s.c_out, s.h_out(), s.w_out()}, x.options());
  const at::Tensor workspace = workspace_for(s, x);
  void* scratch = workspace.data_ptr();
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  cudaError_t err;
  if (x.scalar_type() == at::kHalf) {
    err = drconv::region_conv_cuda_forward<__half>(
        reinterpret_cast<const __half*>(xc.data_ptr<at::Half>()), reinterpret_cast<const __half*>(fc.data_ptr<at::Half>()),
        reinterpret_cast<const __half*>(gc.data_ptr<at::Half>()), reinterpret_cast<__half*>(y.data_ptr<at::Half>()), s,
        scratch, stream);
  } else {
    err = drconv::region_conv_cuda_forward<float>(xc.data_ptr<float>(), fc.data_ptr<float>(), gc.data_ptr<float>(),
                                                  y.data_ptr<float>(), s, scratch, stream);
  }
  TORCH_CHECK(err == cudaSuccess, "region_conv_cuda: kernel launch failed: ", cudaGetErrorString(err));
  return y;
}

// The bucketing steps alone: (counts [N, R], region [N, P], order [N, P]) as int32 views
// of the workspace.
std::vector<at::Tensor> region_conv_cuda_bucket(const at::Tensor& x, const at::Tensor& filters,
                                                const at::Tensor& guide, std::vector<int64_t> stride,
                                                std::vector<int64_t> padding, std::vector<int64_t> dilation) {
  const drconv::RegionConvShape s = checked(x, filters, guide, stride, padding, dilation);
  const c10::cuda::CUDAGuard device(x.device());
  const at::Tensor gc = guide.contiguous();
  const at::Tensor workspace = workspace_for(s, x);
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  const cudaError_t err =
      x.scalar_type() == at::kHalf
          ? drconv::region_conv_cuda_bucket<__half>(reinterpret_cast<const __half*>(gc.data_ptr<at::Half>()), s,
                                                    workspace.data_ptr(), stream)
          : drconv::region_conv_cuda_bucket<float>(gc.data_ptr<float>(), s, workspace.data_ptr(), stream);
  TORCH_CHECK(err == cudaSuccess, "region_conv_cuda: bucketing launch failed: ", cudaGetErrorString(err));
  const int64_t table = static_cast<int64_t>(drconv::cuda_int_block(s.n * s.regions) / sizeof(int));
  const int64_t list = static_cast<int64_t>(drconv::cuda_int_block(s.n * s.pixels()) / sizeof(int));
  const at::Tensor ints = workspace.view(at::kInt);
  return {ints.narrow(0, 0, s.n * s.regions).view({s.n, s.regions}),
          ints.narrow(0, 2 * table, s.n * s.pixels()).view({s.n, s.pixels()}),
          ints.narrow(0, 2 * table + list, s.n * s.pixels()).view({s.n, s.pixels()})};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &region_conv_cuda, "Region-wise conv with the shared CUDA kernel");
  m.def("bucket", &region_conv_cuda_bucket, "The CUDA kernel's bucketing steps alone: counts, region, order");
  m.attr("max_regions") = drconv::kCudaMaxRegions;  // for the Python-side check (cuda_kernel.py)
}
