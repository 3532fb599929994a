// The RegionConv2d node's attributes and input checks (docs/region_conv_op.md,
// "The ONNX node"), shared by the ONNX Runtime op and the TensorRT plugin so that
// both accept and refuse exactly the same graphs, with the same messages.
#pragma once

#include <algorithm>
#include <cstdint>
#include <iterator>
#include <string>
#include <vector>

#include "region_conv_contract.h"
#include "region_conv_shape.h"

namespace drconv {

// The node's attributes, each at the contract's default until read.
struct RegionConvAttrs {
  std::vector<int64_t> strides{std::begin(contract::kDefaultStrides), std::end(contract::kDefaultStrides)};
  // top, left, bottom, right (ONNX Conv order)
  std::vector<int64_t> pads{std::begin(contract::kDefaultPads), std::end(contract::kDefaultPads)};
  std::vector<int64_t> dilations{std::begin(contract::kDefaultDilations), std::end(contract::kDefaultDilations)};
  std::string filter_layout = contract::kDefaultFilterLayout;  // or "IHWO": filters [N, R, C_in, kh, kw, C_out]
  std::string activation = contract::kDefaultActivation;       // "" or "Relu", applied after the optional bias
  // 0: X (Y) NCHW; B: ONNX Runtime's NCHWc with blocks of B channels (version 5, CPU only).
  int64_t x_channel_block = contract::kDefaultChannelBlock, y_channel_block = contract::kDefaultChannelBlock;

  FilterLayout layout() const { return filter_layout == "IHWO" ? FilterLayout::kIHWO : FilterLayout::kOIHW; }

  // Empty when usable, else one line naming the attribute and the rule.
  std::string validate() const {
    auto list = [](const std::vector<int64_t>& v) {
      std::string s = "[";
      for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
      return s + "]";
    };
    if (strides.size() != 2) return "attribute strides must have 2 values [h, w], got " + list(strides);
    if (dilations.size() != 2) return "attribute dilations must have 2 values [h, w], got " + list(dilations);
    if (pads.size() != 4) return "attribute pads must have 4 values [top, left, bottom, right], got " + list(pads);
    if (strides[0] < 1 || strides[1] < 1) return "attribute strides must be >= 1, got " + list(strides);
    if (dilations[0] < 1 || dilations[1] < 1) return "attribute dilations must be >= 1, got " + list(dilations);
    for (int64_t p : pads)
      if (p < 0) return "attribute pads must be >= 0, got " + list(pads);
    if (pads[0] != pads[2] || pads[1] != pads[3])
      return "attribute pads must be symmetric (top == bottom, left == right), got " + list(pads);
    if (filter_layout != "OIHW" && filter_layout != "IHWO")
      return "attribute filter_layout must be \"OIHW\" or \"IHWO\", got \"" + filter_layout + "\"";
    if (!activation.empty() && activation != "Relu")
      return "attribute activation must be \"\" or \"Relu\", got \"" + activation + "\"";
    return blocked_layout_error(x_channel_block, y_channel_block, layout() == FilterLayout::kIHWO, pads[0], pads[1]);
  }
};

// One input's dims, null where the node leaves the input out.
struct InputDims {
  const int64_t* dims = nullptr;
  size_t rank = 0;
  bool present() const { return dims != nullptr; }
};

inline std::string dims_to_string(const int64_t* dims, size_t rank) {
  std::string s = "[";
  for (size_t i = 0; i < rank; ++i) s += (i ? ", " : "") + std::to_string(dims[i]);
  return s + "]";
}

// Checks X [N, C_in, H, W], filters [N, R, C_out, C_in, kh, kw] (IHWO: [N, R, C_in, kh, kw,
// C_out]) and guide [N, R, H_out, W_out] against each other and the attributes. On success
// fills `shape` and returns an empty string; otherwise one line naming the input and all
// three shapes.
inline std::string make_shape(const RegionConvAttrs& attrs, const int64_t* x, size_t x_rank, const int64_t* f,
                              size_t f_rank, const int64_t* g, size_t g_rank, RegionConvShape& shape) {
  // Built only on failure: enqueue calls this every time and must not allocate on success.
  auto shapes = [&] {
    return " (X " + dims_to_string(x, x_rank) + ", filters " + dims_to_string(f, f_rank) + ", guide " +
           dims_to_string(g, g_rank) + ")";
  };
  const bool ihwo = attrs.layout() == FilterLayout::kIHWO;
  if (x_rank != 4) return "RegionConv2d: input X must be 4-D [N, C_in, H, W]" + shapes();
  if (f_rank != 6)
    return std::string("RegionConv2d: input filters must be 6-D ") +
           (ihwo ? "[N, R, C_in, kh, kw, C_out] (filter_layout IHWO)" : "[N, R, C_out, C_in, kh, kw]") + shapes();
  if (g_rank != 4) return "RegionConv2d: input guide must be 4-D [N, R, H_out, W_out]" + shapes();
  for (size_t i = 0; i < 4; ++i)
    if (x[i] < 1 || g[i] < 1) return "RegionConv2d: X and guide must not have empty dimensions" + shapes();
  for (size_t i = 0; i < 6; ++i)
    if (f[i] < 1) return "RegionConv2d: filters must not have empty dimensions" + shapes();
  if (f[0] != x[0] || g[0] != x[0])
    return "RegionConv2d: X, filters and guide must have the same batch size" + shapes();
  // Where C_out, C_in, kh, kw sit in filters.
  const size_t d_out = ihwo ? 5 : 2, d_in = ihwo ? 2 : 3, d_kh = ihwo ? 3 : 4, d_kw = ihwo ? 4 : 5;
  // Blocked, X's dim 1 is C_in padded to whole blocks.
  const int64_t x_channels = RegionConvShape::padded_channels(f[d_in], attrs.x_channel_block);
  if (x_channels != x[1])
    return "RegionConv2d: filters dim " + std::to_string(d_in) + " (C_in) must equal X dim 1" +
           (attrs.x_channel_block > 0 ? " padded to whole blocks of x_channel_block" : "") + shapes();
  if (g[1] != f[1]) return "RegionConv2d: guide dim 1 must equal the number of regions, filters dim 1" + shapes();
  std::string bad = attrs.validate();
  if (!bad.empty()) return "RegionConv2d: " + bad;

  shape = RegionConvShape{};
  shape.n = x[0];
  shape.c_in = f[d_in];
  shape.x_block = attrs.x_channel_block;
  shape.y_block = attrs.y_channel_block;
  shape.h = x[2];
  shape.w = x[3];
  shape.regions = f[1];
  shape.c_out = f[d_out];
  shape.kh = f[d_kh];
  shape.kw = f[d_kw];
  shape.layout = attrs.layout();
  shape.stride_h = attrs.strides[0];
  shape.stride_w = attrs.strides[1];
  shape.pad_h = attrs.pads[0];
  shape.pad_w = attrs.pads[1];
  shape.dil_h = attrs.dilations[0];
  shape.dil_w = attrs.dilations[1];
  const std::string invalid = validate(shape);
  if (!invalid.empty()) return "RegionConv2d: " + invalid + shapes();
  if (g[2] != shape.h_out() || g[3] != shape.w_out())
    return "RegionConv2d: guide must be " + std::to_string(shape.h_out()) + "x" + std::to_string(shape.w_out()) +
           " (the conv output size) in dims 2-3" + shapes();
  return {};
}

// A MixtureRegionConv2d node's filters are coefficients [N, R, M] times basis [M, one filter]
// (one filter: [C_out, C_in, kh, kw], or [C_in, kh, kw, C_out] with filter_layout IHWO).
// Checks the two against each other; on success fills `filters` with the dims of the
// filters they make, [N, R, one filter], for make_shape, and returns an empty string.
inline std::string mixture_filter_dims(const int64_t* z, size_t z_rank, const int64_t* b, size_t b_rank,
                                       int64_t (&filters)[6]) {
  auto shapes = [&] {
    return " (coefficients " + dims_to_string(z, z_rank) + ", basis " + dims_to_string(b, b_rank) + ")";
  };
  if (z_rank != 3) return "MixtureRegionConv2d: input coefficients must be 3-D [N, R, M]" + shapes();
  if (b_rank != 5)
    return "MixtureRegionConv2d: input basis must be 5-D [M, C_out, C_in, kh, kw] (filter_layout IHWO: [M, C_in, kh, "
           "kw, C_out])" +
           shapes();
  if (z[2] != b[0]) return "MixtureRegionConv2d: coefficients dim 2 (M) must equal basis dim 0" + shapes();
  const int64_t dims[6] = {z[0], z[1], b[1], b[2], b[3], b[4]};
  std::copy(dims, dims + 6, filters);
  return {};
}

// A routed MixtureRegionConv2d (version 4) computes its coefficients [N, R, M] from X: checks
// routing [C_in, R * M] and routing_bias [R * M] (null when absent) against X [N, C_in, H, W],
// the guide's R and the basis' M. On success fills `coefficients` with [N, R, M], the dims the
// coefficients input would have, for mixture_filter_dims, and returns an empty string.
// `c_in`: X's channels (dim 1, less the padding of a blocked layout).
inline std::string routing_dims(const int64_t* x, size_t x_rank, int64_t c_in, const int64_t* g, size_t g_rank,
                                const int64_t* b, size_t b_rank, const int64_t* w, size_t w_rank, const int64_t* bias,
                                size_t bias_rank, int64_t (&coefficients)[3]) {
  auto shapes = [&] {
    return " (X " + dims_to_string(x, x_rank) + ", basis " + dims_to_string(b, b_rank) + ", guide " +
           dims_to_string(g, g_rank) + ", routing " + dims_to_string(w, w_rank) +
           (bias != nullptr ? ", routing_bias " + dims_to_string(bias, bias_rank) : std::string()) + ")";
  };
  if (x_rank != 4) return "MixtureRegionConv2d: input X must be 4-D [N, C_in, H, W]" + shapes();
  if (g_rank != 4) return "MixtureRegionConv2d: input guide must be 4-D [N, R, H_out, W_out]" + shapes();
  if (b_rank < 1) return "MixtureRegionConv2d: input basis must be 5-D [M, one filter]" + shapes();
  const int64_t width = g[1] * b[0];
  if (w_rank != 2 || w[0] != c_in || w[1] != width)
    return "MixtureRegionConv2d: input routing must be 2-D [C_in, R * M] = [" + std::to_string(c_in) + ", " +
           std::to_string(width) + "] (C_in from X, R from the guide, M from the basis)" + shapes();
  if (bias != nullptr && (bias_rank != 1 || bias[0] != width))
    return "MixtureRegionConv2d: input routing_bias must be 1-D [R * M] = [" + std::to_string(width) + "]" + shapes();
  coefficients[0] = x[0];
  coefficients[1] = g[1];
  coefficients[2] = b[0];
  return {};
}

// The optional fourth input B, added per output channel: empty when it is [C_out].
inline std::string check_bias(const int64_t* b, size_t b_rank, int64_t c_out) {
  if (b_rank == 1 && b[0] == c_out) return {};
  return "RegionConv2d: input B must be 1-D [C_out] = [" + std::to_string(c_out) + "], got " +
         dims_to_string(b, b_rank);
}

// A RegionConv2d node's shape from all its inputs (`bias` absent where the node has no B):
// make_shape, then check_bias. Fills `shape` and returns an empty string, or the message.
inline std::string node_shape(const RegionConvAttrs& attrs, InputDims x, InputDims filters, InputDims guide,
                              InputDims bias, RegionConvShape& shape) {
  const std::string bad = make_shape(attrs, x.dims, x.rank, filters.dims, filters.rank, guide.dims, guide.rank, shape);
  return bad.empty() && bias.present() ? check_bias(bias.dims, bias.rank, shape.c_out) : bad;
}

// A MixtureRegionConv2d node's shape from all its inputs, in the node's order: the
// coefficients given, or (`routing` present) made by its routing, mixed with the basis into
// filters, checked as RegionConv2d's against X, the guide and B. The caller has checked that
// exactly one of the coefficients and the routing is there. Fills `shape` and returns an
// empty string, or one line naming the node, the input and the shapes.
inline std::string mixture_shape(const RegionConvAttrs& attrs, InputDims x, InputDims coefficients, InputDims basis,
                                 InputDims guide, InputDims bias, InputDims routing, InputDims routing_bias,
                                 RegionConvShape& shape) {
  int64_t routed[3] = {};
  if (routing.present()) {
    // C_in from the basis where X is blocked (make_shape checks the two against each other).
    const bool ihwo = attrs.layout() == FilterLayout::kIHWO;
    const int64_t c_in = attrs.x_channel_block > 0 && basis.rank == 5 ? basis.dims[ihwo ? 1 : 2]
                         : x.rank == 4                              ? x.dims[1]
                                                                    : -1;
    const std::string bad = routing_dims(x.dims, x.rank, c_in, guide.dims, guide.rank, basis.dims, basis.rank,
                                         routing.dims, routing.rank, routing_bias.dims, routing_bias.rank, routed);
    if (!bad.empty()) return bad;
    coefficients = {routed, 3};
  }
  int64_t filters[6] = {};
  const std::string bad = mixture_filter_dims(coefficients.dims, coefficients.rank, basis.dims, basis.rank, filters);
  if (!bad.empty()) return bad;
  // Its messages say which node, and those about the filters that they are coefficients x basis.
  const std::string bad_shape = make_shape(attrs, x.dims, x.rank, filters, 6, guide.dims, guide.rank, shape);
  if (!bad_shape.empty()) return "Mixture" + bad_shape + " (filters = coefficients x basis)";
  const std::string bad_bias = bias.present() ? check_bias(bias.dims, bias.rank, shape.c_out) : std::string();
  return bad_bias.empty() ? bad_bias : "Mixture" + bad_bias;
}

}  // namespace drconv
