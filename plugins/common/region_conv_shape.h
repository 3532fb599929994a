// The region-wise conv's sizes and the rules every kernel shares (CPU, CUDA, ONNX Runtime,
// TensorRT): validation and the region of a pixel (docs/region_conv_op.md).
#pragma once

#include <cmath>
#include <cstdint>
#include <string>

#include "region_conv_contract.h"

namespace drconv {

// How one (sample, region) filter is laid out in the filters tensor (docs/region_conv_op.md,
// attribute filter_layout). OIHW is PyTorch's and ONNX Conv's; IHWO puts the output channel
// innermost, the order the CPU kernel reads, so it reads the filters without packing them.
enum class FilterLayout { kOIHW, kIHWO };

// floor((size + 2*pad - dil*(k - 1) - 1) / stride) + 1, the ONNX and PyTorch conv size
// (0 where the kernel does not fit), or -1 where an intermediate value overflows int64,
// as absurd attributes (a dilation of 2^62) make it: validate() reports that instead of a
// wrapped-around size.
inline int64_t conv_out_size(int64_t size, int64_t k, int64_t stride, int64_t pad, int64_t dil) {
  int64_t span = 0, twice_pad = 0, total = 0;
  if (__builtin_mul_overflow(dil, k - 1, &span) || __builtin_mul_overflow(pad, int64_t{2}, &twice_pad) ||
      __builtin_add_overflow(size, twice_pad, &total) || __builtin_sub_overflow(total, span, &total))
    return -1;
  if (total < 1) return 0;  // C++ division truncates toward 0; the formula floors
  return (total - 1) / stride + 1;
}

struct RegionConvShape {
  int64_t n = 0, c_in = 0, h = 0, w = 0;  // x [N, C_in, H, W]
  int64_t regions = 0, c_out = 0, kh = 0, kw = 0;  // filters [N, R, C_out, C_in, kh, kw] (OIHW)
  int64_t stride_h = 1, stride_w = 1, pad_h = 0, pad_w = 0, dil_h = 1, dil_w = 1;
  FilterLayout layout = FilterLayout::kOIHW;  // IHWO: filters [N, R, C_in, kh, kw, C_out]
  // 0: x, y NCHW. B > 0: ONNX Runtime's blocked NCHWc layout, [N, ceil(C / B), H, W, B] with
  // the channels past C zero (attributes x_channel_block, y_channel_block; CPU float32 only).
  int64_t x_block = 0, y_block = 0;

  int64_t h_out() const { return conv_out_size(h, kh, stride_h, pad_h, dil_h); }
  int64_t w_out() const { return conv_out_size(w, kw, stride_w, pad_w, dil_w); }
  int64_t pixels() const { return h_out() * w_out(); }
  int64_t patch() const { return kh * kw * c_in; }  // one im2col row
  // Floats of one sample of x and of y, as laid out (a blocked layout pads C to whole blocks).
  int64_t x_sample() const { return padded_channels(c_in, x_block) * h * w; }
  int64_t y_sample() const { return padded_channels(c_out, y_block) * pixels(); }

  static int64_t padded_channels(int64_t c, int64_t block) { return block > 0 ? (c + block - 1) / block * block : c; }
};

// Empty where X and Y may take these NCHWc blocks (0: NCHW), else one line naming the rule.
inline std::string blocked_layout_error(int64_t x_block, int64_t y_block, bool ihwo, int64_t pad_h, int64_t pad_w) {
  for (const int64_t block : {x_block, y_block}) {
    bool known = block == 0;
    for (const int64_t b : contract::kChannelBlocks) known = known || block == b;
    if (!known)
      return "x_channel_block and y_channel_block must be 0 (NCHW), 4, 8 or 16, got " + std::to_string(block);
  }
  if ((x_block > 0 || y_block > 0) && !ihwo)
    return "the blocked layout (x_channel_block, y_channel_block) needs filter_layout IHWO";
  if (x_block > 0 && (pad_h > 0 || pad_w > 0))
    return "X in the blocked layout (x_channel_block) needs pads 0, got " + std::to_string(pad_h) + "," +
           std::to_string(pad_w);
  return {};
}

// Empty when the shape is valid, else one line naming what is wrong.
inline std::string validate(const RegionConvShape& s) {
  auto str = [](int64_t v) { return std::to_string(v); };
  if (s.n < 0 || s.c_in < 0 || s.h < 1 || s.w < 1 || s.c_out < 0)
    return "x/filters have invalid sizes (N=" + str(s.n) + ", C_in=" + str(s.c_in) + ", H=" + str(s.h) +
           ", W=" + str(s.w) + ", C_out=" + str(s.c_out) + ")";
  if (s.regions < 1) return "filters must hold at least one region, got R=" + str(s.regions);
  if (s.kh < 1 || s.kw < 1) return "kernel size must be >= 1, got " + str(s.kh) + "x" + str(s.kw);
  if (s.stride_h < 1 || s.stride_w < 1) return "strides must be >= 1, got " + str(s.stride_h) + "," + str(s.stride_w);
  if (s.dil_h < 1 || s.dil_w < 1) return "dilations must be >= 1, got " + str(s.dil_h) + "," + str(s.dil_w);
  if (s.pad_h < 0 || s.pad_w < 0) return "pads must be >= 0, got " + str(s.pad_h) + "," + str(s.pad_w);
  if (s.h_out() < 0 || s.w_out() < 0)
    return "pads " + str(s.pad_h) + "," + str(s.pad_w) + " and dilations " + str(s.dil_h) + "," + str(s.dil_w) +
           " with kernel " + str(s.kh) + "x" + str(s.kw) + " overflow the output size arithmetic (int64)";
  int64_t pixels = 0;
  if (__builtin_mul_overflow(s.h_out(), s.w_out(), &pixels))
    return "the output size " + str(s.h_out()) + "x" + str(s.w_out()) + " overflows int64";
  const std::string blocked =
      blocked_layout_error(s.x_block, s.y_block, s.layout == FilterLayout::kIHWO, s.pad_h, s.pad_w);
  if (!blocked.empty()) return blocked;
  if (s.h_out() < 1 || s.w_out() < 1)
    return "x spatial size " + str(s.h) + "x" + str(s.w) + " gives an empty output " + str(s.h_out()) + "x" +
           str(s.w_out()) + " for kernel " + str(s.kh) + "x" + str(s.kw);
  return {};
}

// First maximum over R, NaN counting as the maximum (as torch.argmax): the index is
// always in [0, R).
template <typename T>
inline int64_t region_of(const T* guide, int64_t regions, int64_t step) {
  int64_t best = 0;
  T best_value = guide[0];
  if (std::isnan(static_cast<double>(best_value))) return 0;
  for (int64_t r = 1; r < regions; ++r) {
    const T v = guide[r * step];
    if (std::isnan(static_cast<double>(v))) return r;
    if (v > best_value) {
      best_value = v;
      best = r;
    }
  }
  return best;
}

// region[p] = region_of(guide + p, regions, pixels) for p in [begin, end): guide is one
// sample's [R][pixels].
template <typename T>
void assign_regions(const T* guide, int64_t regions, int64_t pixels, int64_t begin, int64_t end, int32_t* region) {
  for (int64_t p = begin; p < end; ++p) region[p] = static_cast<int32_t>(region_of(guide + p, regions, pixels));
}

}  // namespace drconv
