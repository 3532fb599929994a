// Shape checks of the PyTorch bindings of the CPU and the CUDA kernels: the rules and the
// messages of the Python op (drconv/_geometry.py, check_inputs), raised as ValueError, so a
// call gets the same error whichever kernel its device dispatches to.
#pragma once

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-parameter"
#include <ATen/ATen.h>
#pragma GCC diagnostic pop

#include <string>

#include "region_conv_shape.h"

namespace drconv {

// A shape or pair as Python prints a tuple: (1, 3, 8, 8).
inline std::string tuple_str(at::IntArrayRef values) {
  std::string s = "(";
  for (size_t i = 0; i < values.size(); ++i) s += (i ? ", " : "") + std::to_string(values[i]);
  return s + (values.size() == 1 ? ",)" : ")");
}

// The messages are built only on failure (TORCH_CHECK evaluates them then): this runs on
// every call of the op.
inline RegionConvShape checked_shape(const at::Tensor& x, const at::Tensor& filters, const at::Tensor& guide,
                                     at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation) {
  auto xs = [&] { return tuple_str(x.sizes()); };
  auto fs = [&] { return tuple_str(filters.sizes()); };
  auto gs = [&] { return tuple_str(guide.sizes()); };
  TORCH_CHECK_VALUE(x.dim() == 4, "x must be 4-D [N, C_in, H, W], got shape ", xs());
  TORCH_CHECK_VALUE(filters.dim() == 6, "filters must be 6-D [N, R, C_out, C_in, kh, kw], got shape ", fs());
  TORCH_CHECK_VALUE(guide.dim() == 4, "guide must be 4-D [N, R, H_out, W_out], got shape ", gs());
  TORCH_CHECK_VALUE(x.scalar_type() == filters.scalar_type() && x.scalar_type() == guide.scalar_type(),
                    "x, filters and guide must share one dtype, got ", x.scalar_type(), ", ", filters.scalar_type(),
                    ", ", guide.scalar_type());
  TORCH_CHECK_VALUE(at::isFloatingType(x.scalar_type()), "x, filters and guide must be floating point, got ",
                    x.scalar_type());
  TORCH_CHECK_VALUE(x.device() == filters.device() && x.device() == guide.device(),
                    "x, filters and guide must be on one device, got ", x.device(), ", ", filters.device(), ", ",
                    guide.device());
  TORCH_CHECK_VALUE(stride.size() == 2 && padding.size() == 2 && dilation.size() == 2,
                    "stride, padding and dilation must have 2 values each, got ", tuple_str(stride), ", ",
                    tuple_str(padding), ", ", tuple_str(dilation));
  RegionConvShape s;
  s.n = x.size(0), s.c_in = x.size(1), s.h = x.size(2), s.w = x.size(3);
  s.regions = filters.size(1), s.c_out = filters.size(2), s.kh = filters.size(4), s.kw = filters.size(5);
  s.stride_h = stride[0], s.stride_w = stride[1], s.pad_h = padding[0], s.pad_w = padding[1];
  s.dil_h = dilation[0], s.dil_w = dilation[1];
  TORCH_CHECK_VALUE(filters.size(0) == s.n && guide.size(0) == s.n, "batch size mismatch: x has N=", s.n,
                    ", filters N=", filters.size(0), ", guide N=", guide.size(0), " (shapes ", xs(), ", ", fs(), ", ", gs(),
                    ")");
  TORCH_CHECK_VALUE(filters.size(3) == s.c_in, "filters C_in=", filters.size(3), " (shape ", fs(),
                    ") does not match x C_in=", s.c_in, " (shape ", xs(), ")");
  TORCH_CHECK_VALUE(s.regions >= 1, "filters must hold at least one region (R >= 1), got shape ", fs());
  TORCH_CHECK_VALUE(guide.size(1) == s.regions, "guide R=", guide.size(1), " (shape ", gs(),
                    ") does not match filters R=", s.regions, " (shape ", fs(), ")");
  TORCH_CHECK_VALUE(s.kh >= 1 && s.kw >= 1, "filters kernel size must be >= 1, got shape ", fs());
  TORCH_CHECK_VALUE(s.stride_h >= 1 && s.stride_w >= 1 && s.dil_h >= 1 && s.dil_w >= 1 && s.pad_h >= 0 && s.pad_w >= 0,
                    "need stride >= 1, dilation >= 1, padding >= 0; got ", tuple_str(stride), ", ",
                    tuple_str(dilation), ", ", tuple_str(padding));
  auto kernel = [&] { return "kernel " + std::to_string(s.kh) + "x" + std::to_string(s.kw); };
  auto params = [&] {
    return "stride " + tuple_str(stride) + ", padding " + tuple_str(padding) + ", dilation " + tuple_str(dilation);
  };
  TORCH_CHECK_VALUE(s.h_out() >= 1 && s.w_out() >= 1, "x spatial size ", s.h, "x", s.w, " is too small for ",
                    kernel(), " with ", params(), " (output would be ", s.h_out(), "x", s.w_out(), ")");
  TORCH_CHECK_VALUE(guide.size(2) == s.h_out() && guide.size(3) == s.w_out(), "guide spatial size ", guide.size(2),
                    "x", guide.size(3), " (shape ", gs(), ") must equal the output size ", s.h_out(), "x", s.w_out(),
                    " of x ", xs(), " with ", kernel(), ", ", params());
  const std::string error = validate(s);  // what the rules above leave (empty x or filters dimensions)
  TORCH_CHECK_VALUE(error.empty(), error);
  return s;
}

}  // namespace drconv
