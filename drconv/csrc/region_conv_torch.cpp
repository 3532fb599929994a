// PyTorch binding of the shared CPU kernel (plugins/common/region_conv_cpu.h):
// MKL GEMM through ATen, ATen's intra-op thread pool.
// Torch's headers are not -Wextra clean; keep the warnings for our own code only.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-parameter"
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/record_function.h>
#include <torch/csrc/utils/pybind.h>
#pragma GCC diagnostic pop

#include "region_conv_checks.h"
#include "region_conv_cpu.h"

namespace {

struct AtenGemm {
  template <typename T>
  void operator()(int64_t m, int64_t n, int64_t k, const T* a, const T* b, T* c) const {
    const auto options = at::TensorOptions().dtype(c10::CppTypeToScalarType<T>::value);
    at::Tensor out = at::from_blob(c, {m, n}, options);
    at::mm_out(out, at::from_blob(const_cast<T*>(a), {m, k}, options),
               at::from_blob(const_cast<T*>(b), {n, k}, options).t());
  }
};

struct AtenParallelFor {
  template <typename F>
  void operator()(int64_t count, const F& fn) const {
    at::parallel_for(0, count, 1, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) fn(i);
    });
  }
};

at::Tensor region_conv_forward(const at::Tensor& x, const at::Tensor& filters, const at::Tensor& guide,
                               std::vector<int64_t> stride, std::vector<int64_t> padding,
                               std::vector<int64_t> dilation) {
  // Seen by torch.profiler also when drconv.region_conv skips the dispatcher (its eager
  // fast path records no op event); costs a flag check when no profiler runs.
  RECORD_FUNCTION("drconv::region_conv_cpu_kernel", std::vector<c10::IValue>({x, filters, guide}));
  TORCH_CHECK_VALUE(x.device().is_cpu() && filters.device().is_cpu() && guide.device().is_cpu(),
                    "region_conv: the native kernel takes CPU tensors");
  const drconv::RegionConvShape s = drconv::checked_shape(x, filters, guide, stride, padding, dilation);
  const at::Tensor xc = x.contiguous(), fc = filters.contiguous(), gc = guide.contiguous();
  at::Tensor y = at::empty({s.n, s.c_out, s.h_out(), s.w_out()}, x.options());
  const int64_t workers = at::get_num_threads();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "region_conv_forward", [&] {
    // One block, so that the allocator can hand the same memory back call after call.
    at::Tensor workspace = at::empty({drconv::region_conv_workspace_size<scalar_t>(s, workers)},
                                     x.options().dtype(at::kByte));
    drconv::region_conv_forward<scalar_t>(xc.data_ptr<scalar_t>(), fc.data_ptr<scalar_t>(), gc.data_ptr<scalar_t>(),
                                          y.data_ptr<scalar_t>(), s, AtenGemm{}, AtenParallelFor{}, workers,
                                          workspace.data_ptr());
  });
  return y;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("region_conv_forward", &region_conv_forward, "Region-wise convolution forward (CPU, fused)");
}
