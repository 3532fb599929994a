// Shape checks shared by the PyTorch bindings of the CPU and the CUDA kernels: the same
// rules and messages as the Python op (drconv/_geometry.py), raised as ValueError.
#pragma once

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-parameter"
#include <ATen/ATen.h>
#pragma GCC diagnostic pop

#include <string>
#include <vector>

#include "region_conv_shape.h"

namespace drconv {

inline RegionConvShape checked_shape(const at::Tensor& x, const at::Tensor& filters, const at::Tensor& guide,
                                     const std::vector<int64_t>& stride, const std::vector<int64_t>& padding,
                                     const std::vector<int64_t>& dilation) {
  TORCH_CHECK_VALUE(x.dim() == 4 && filters.dim() == 6 && guide.dim() == 4,
                    "region_conv: need x 4-D, filters 6-D, guide 4-D; got ", x.sizes(), ", ", filters.sizes(), ", ",
                    guide.sizes());
  TORCH_CHECK_VALUE(stride.size() == 2 && padding.size() == 2 && dilation.size() == 2,
                    "region_conv: stride, padding and dilation must have 2 values each");
  TORCH_CHECK_VALUE(x.scalar_type() == filters.scalar_type() && x.scalar_type() == guide.scalar_type(),
                    "region_conv: x, filters and guide must share one dtype");
  RegionConvShape s;
  s.n = x.size(0), s.c_in = x.size(1), s.h = x.size(2), s.w = x.size(3);
  s.regions = filters.size(1), s.c_out = filters.size(2), s.kh = filters.size(4), s.kw = filters.size(5);
  s.stride_h = stride[0], s.stride_w = stride[1], s.pad_h = padding[0], s.pad_w = padding[1];
  s.dil_h = dilation[0], s.dil_w = dilation[1];
  const std::string error = validate(s);
  TORCH_CHECK_VALUE(error.empty(), "region_conv: ", error);
  TORCH_CHECK_VALUE(filters.size(0) == s.n && filters.size(3) == s.c_in, "region_conv: filters ", filters.sizes(),
                    " do not fit x ", x.sizes());
  TORCH_CHECK_VALUE(guide.size(0) == s.n && guide.size(1) == s.regions && guide.size(2) == s.h_out() &&
                        guide.size(3) == s.w_out(),
                    "region_conv: guide ", guide.sizes(), " must be [", s.n, ", ", s.regions, ", ", s.h_out(), ", ",
                    s.w_out(), "]");
  return s;
}

}  // namespace drconv
