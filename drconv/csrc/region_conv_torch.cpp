// PyTorch binding of the shared CPU kernel (plugins/common/region_conv_cpu.h):
// MKL GEMM through ATen, ATen's intra-op thread pool.
// Torch's headers are not -Wextra clean; keep the warnings for our own code only.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-parameter"
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/csrc/utils/pybind.h>
#pragma GCC diagnostic pop

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
  TORCH_CHECK_VALUE(x.dim() == 4 && filters.dim() == 6 && guide.dim() == 4,
                    "region_conv: need x 4-D, filters 6-D, guide 4-D; got ", x.sizes(), ", ", filters.sizes(), ", ",
                    guide.sizes());
  TORCH_CHECK_VALUE(stride.size() == 2 && padding.size() == 2 && dilation.size() == 2,
                    "region_conv: stride, padding and dilation must have 2 values each");
  TORCH_CHECK_VALUE(x.device().is_cpu() && filters.device().is_cpu() && guide.device().is_cpu(),
                    "region_conv: the native kernel takes CPU tensors");
  TORCH_CHECK_VALUE(x.scalar_type() == filters.scalar_type() && x.scalar_type() == guide.scalar_type(),
                    "region_conv: x, filters and guide must share one dtype");
  drconv::RegionConvShape s;
  s.n = x.size(0), s.c_in = x.size(1), s.h = x.size(2), s.w = x.size(3);
  s.regions = filters.size(1), s.c_out = filters.size(2), s.kh = filters.size(4), s.kw = filters.size(5);
  s.stride_h = stride[0], s.stride_w = stride[1], s.pad_h = padding[0], s.pad_w = padding[1];
  s.dil_h = dilation[0], s.dil_w = dilation[1];
  const std::string error = drconv::validate(s);
  TORCH_CHECK_VALUE(error.empty(), "region_conv: ", error);
  TORCH_CHECK_VALUE(filters.size(0) == s.n && filters.size(3) == s.c_in, "region_conv: filters ", filters.sizes(),
                    " do not fit x ", x.sizes());
  TORCH_CHECK_VALUE(guide.size(0) == s.n && guide.size(1) == s.regions && guide.size(2) == s.h_out() &&
                        guide.size(3) == s.w_out(),
                    "region_conv: guide ", guide.sizes(), " must be [", s.n, ", ", s.regions, ", ", s.h_out(), ", ",
                    s.w_out(), "]");
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
