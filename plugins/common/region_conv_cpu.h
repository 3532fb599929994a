// Region-wise convolution (DRConv step 3) on the CPU at the cost of one dense conv.
//
// Every output pixel needs exactly one filter, that of its region. Pixels are
// counting-sorted by region. float32 then runs the direct kernel of
// region_conv_cpu_direct.h (region_conv_forward_f32). Other types gather the im2col rows
// of a tile of one region's pixels from a padded channels-last copy of x (a patch row is
// kh runs of contiguous memory) and run one GEMM per tile with the region's filter. The
// multiply-adds equal those of one dense convolution; the public implementation does R
// times as many.
//
// Header-only and free of framework types: the caller injects the parallel-for (ATen's
// or ORT's thread pool) and, for the GEMM path, the GEMM (MKL via ATen in the PyTorch
// binding). The contract is docs/region_conv_op.md.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include "region_conv_cpu_direct.h"
#include "region_conv_shape.h"

namespace drconv {

// Pixels per GEMM: big enough to keep the GEMM efficient, small enough that a
// tile's im2col rows stay in L2.
constexpr int64_t kTilePixels = 256;

// Below this many multiply-adds a call runs on the calling thread alone: handing work to a
// pool costs microseconds, more than such a call's arithmetic (and on a VM a parked vCPU can
// take a timer tick, ~4 ms, to wake: a 1x1x1x1 layer read p50 14 us, p99 4.7 ms, in
// benchmarks/bench_torch_overhead.py before this rule). 2^20 (the zoo's 7x7 to 28x28 layers on
// one thread) read 2% faster in the model without spinning, but 5% slower with ONNX Runtime's
// default spinning and up to 1.36x slower as a lone layer (issue 24, A/B).
constexpr int64_t kSerialMultiplyAdds = int64_t{1} << 16;

// The workers a call of this shape uses, given `workers` available. The workspace sized for
// `workers` (region_conv_workspace_size) holds what the fewer need.
inline int64_t useful_workers(const RegionConvShape& s, int64_t workers) {
  const int64_t multiply_adds = s.n * s.pixels() * s.c_out * s.patch();
  return multiply_adds < kSerialMultiplyAdds ? 1 : std::max<int64_t>(workers, 1);
}

// A MixtureRegionConv2d node's filters, mixed by the kernel into its workspace before it
// convolves them (docs/region_conv_op.md): filters[n, r, :] = sum over m of
// coefficients[n, r, m] * basis[m, :]. A routed node (version 4) computes the coefficients
// itself, from its input: coefficients[n] = sigmoid(mean_hw(x[n]) @ routing + routing_bias).
struct Mixture {
  const float* coefficients = nullptr;  // [N, R, M]; null when routed
  const float* basis = nullptr;         // [M, one filter], in the node's filter_layout
  int64_t bases = 0;                    // M
  const float* routing = nullptr;       // [C_in, R * M], or null
  const float* routing_bias = nullptr;  // [R * M], or null
};

// Floats one sample's routing needs (route_sample): the channel means, then the coefficients.
inline int64_t routing_floats(const RegionConvShape& s, int64_t bases) { return s.c_in + s.regions * bases; }

// Sample x_n's coefficients [R, M] of a routed mixture into z, by way of its channel means
// (C_in floats of scratch at `means`).
inline void route_sample(const float* x_n, const RegionConvShape& s, const Mixture& mixture,
                         const direct::Kernels& kernels, float* means, float* z) {
  const int64_t width = s.regions * mixture.bases;
  kernels.route(x_n, s.c_in, s.h * s.w, s.x_block, mixture.routing, width, means, z);
  for (int64_t j = 0; j < width; ++j) {
    const float v = z[j] + (mixture.routing_bias != nullptr ? mixture.routing_bias[j] : 0.0f);
    z[j] = 1.0f / (1.0f + std::exp(-v));
  }
}

// Floats between a Mixture's filters: one filter and one vector. The vector is the slack
// the kernel reads past a row's last channel, and it keeps the filters from lying a
// multiple of 4 KB apart, where the mixing's stores and loads collided in L1 (2x slower at a
// 96x96 1x1 filter).
inline int64_t mixture_stride(const RegionConvShape& s) { return s.c_out * s.patch() + direct::kLanes; }
inline int64_t mixture_floats(const RegionConvShape& s) { return s.n * s.regions * mixture_stride(s); }

// filters[n, r, :] = sum over m of coefficients[n, r, m] * basis[m, :], each basis row `size`
// floats and the filters `stride` apart, in whatever layout the basis has. Split into
// `workers` ranges of 16-float multiples per sample; tiny mixtures run on one thread, by
// the rule of useful_workers.
template <typename ParallelFor>
void mix_filters_f32(const float* coefficients, const float* basis, float* filters, int64_t n, int64_t regions,
                     int64_t bases, int64_t size, int64_t stride, const ParallelFor& parallel_for, int64_t workers,
                     const direct::Kernels& kernels) {
  if (n == 0 || size == 0) return;
  const int64_t chunks = n * regions * bases * size < kSerialMultiplyAdds ? 1 : std::max<int64_t>(workers, 1);
  const int64_t step = (size + chunks * direct::kLanes - 1) / (chunks * direct::kLanes) * direct::kLanes;
  const int64_t per_sample = (size + step - 1) / step;
  const auto mix = kernels.mix;
  parallel_for(n * per_sample, [&](int64_t task) {
    const int64_t sample = task / per_sample, begin = task % per_sample * step;
    float* f = filters + sample * regions * stride;
    mix(coefficients + sample * regions * bases, basis, f, regions, bases, size, stride, begin,
        std::min(size, begin + step));
    if (begin + step >= size)  // the slack after each filter, read (never stored) by the kernel
      for (int64_t r = 0; r < regions; ++r) std::fill(f + r * stride + size, f + (r + 1) * stride, 0.0f);
  });
}

namespace detail {

// Stable counting sort of one sample's pixels by region: region r's pixels are
// order[start[r] .. start[r+1]), in raster order.
// `first` is added to every index stored (to sort a range of pixels beginning there).
inline void bucket_pixels(const int32_t* region, int64_t regions, int64_t pixels, int32_t* order, int64_t* start,
                          int64_t first = 0) {
  std::fill(start, start + regions + 1, int64_t{0});
  for (int64_t p = 0; p < pixels; ++p) ++start[region[p] + 1];
  for (int64_t r = 0; r < regions; ++r) start[r + 1] += start[r];
  std::vector<int64_t> next(start, start + regions);
  for (int64_t p = 0; p < pixels; ++p) order[next[region[p]]++] = static_cast<int32_t>(p + first);
}

// Where each output pixel of rows [row_begin, row_end) finds its receptive field's first tap in
// one (padded, Wp wide) input plane, in floats `scale` apart per pixel (1, or x's NCHWc block):
// saves two integer divisions per pixel in the block loop.
inline void pixel_offsets(const RegionConvShape& s, int64_t row_begin, int64_t row_end, int64_t* offset,
                          int64_t scale = 1) {
  const int64_t wp = s.w + 2 * s.pad_w, w_out = s.w_out();
  for (int64_t oh = row_begin, p = row_begin * w_out; oh < row_end; ++oh)
    for (int64_t ow = 0; ow < w_out; ++ow, ++p) offset[p] = (oh * s.stride_h * wp + ow * s.stride_w) * scale;
}

// x[n] (C, H, W) -> zero-padded channels-last (Hp, Wp, C). Transposed in blocks of
// pixels so that both the reads and the writes stay within a few cache lines.
// Rows [row_begin, row_end) of x, with the pad rows above the first and below the last.
template <typename T>
void pad_channels_last(const T* x, const RegionConvShape& s, T* out, int64_t row_begin, int64_t row_end) {
  const int64_t wp = s.w + 2 * s.pad_w, c = s.c_in, plane = s.h * s.w;
  constexpr int64_t kBlock = 16;
  if (row_begin == 0) std::fill(out, out + s.pad_h * wp * c, T(0));
  if (row_end == s.h) std::fill(out + (s.pad_h + s.h) * wp * c, out + (2 * s.pad_h + s.h) * wp * c, T(0));
  for (int64_t i = row_begin; i < row_end; ++i) {
    T* dst = out + (i + s.pad_h) * wp * c;
    std::fill(dst, dst + s.pad_w * c, T(0));
    std::fill(dst + (s.pad_w + s.w) * c, dst + wp * c, T(0));
    dst += s.pad_w * c;
    for (int64_t j0 = 0; j0 < s.w; j0 += kBlock) {
      const int64_t j1 = std::min(s.w, j0 + kBlock);
      for (int64_t ch = 0; ch < c; ++ch) {
        const T* src = x + ch * plane + i * s.w;
        for (int64_t j = j0; j < j1; ++j) dst[j * c + ch] = src[j];
      }
    }
  }
}

// One filter (C_out, C_in, kh, kw), or (C_in, kh, kw, C_out) for IHWO, -> (C_out, kh, kw,
// C_in), the order of the patch rows.
template <typename T>
void reorder_filter(const T* f, const RegionConvShape& s, T* out) {
  const int64_t taps = s.kh * s.kw, c = s.c_in;
  if (s.layout == FilterLayout::kIHWO) {
    for (int64_t o = 0; o < s.c_out; ++o, out += c * taps)
      for (int64_t t = 0; t < taps; ++t)
        for (int64_t ch = 0; ch < c; ++ch) out[t * c + ch] = f[(ch * taps + t) * s.c_out + o];
    return;
  }
  // Contiguous writes; the strided reads stay inside one output channel's filter (L1).
  for (int64_t o = 0; o < s.c_out; ++o, f += c * taps, out += c * taps)
    for (int64_t t = 0; t < taps; ++t)
      for (int64_t ch = 0; ch < c; ++ch) out[t * c + ch] = f[ch * taps + t];
}

struct Tile {
  int64_t sample, region, begin, count;  // order[begin .. begin+count) of that sample
};

inline int64_t align(int64_t bytes) { return (bytes + 63) / 64 * 64; }

// The workspace, carved from one block: zero-filling and faulting in several large
// allocations per call would cost as much as the GEMM of a small layer.
template <typename T>
struct Layout {
  int64_t x_padded, region, order, start, worker, worker_rows, worker_out, worker_weights, worker_stride, total;

  Layout(const RegionConvShape& s, int64_t workers) {
    const int64_t hp = s.h + 2 * s.pad_h, wp = s.w + 2 * s.pad_w, pixels = s.pixels();
    x_padded = 0;
    region = x_padded + align(s.n * hp * wp * s.c_in * int64_t(sizeof(T)));
    order = region + align(s.n * pixels * int64_t(sizeof(int32_t)));
    start = order + align(s.n * pixels * int64_t(sizeof(int32_t)));
    worker = start + align(s.n * (s.regions + 1) * int64_t(sizeof(int64_t)));
    worker_rows = 0;
    worker_out = worker_rows + align(kTilePixels * s.patch() * int64_t(sizeof(T)));
    worker_weights = worker_out + align(kTilePixels * s.c_out * int64_t(sizeof(T)));
    worker_stride = worker_weights + align(s.c_out * s.patch() * int64_t(sizeof(T)));
    total = worker + std::max<int64_t>(workers, 1) * worker_stride;
  }
};

}  // namespace detail

namespace detail {

// The float32 path's workspace: padded x (NCHW), regions, the pixels bucketed by region,
// every (sample, region) filter packed, and per worker an accumulator block and pixel
// offsets.
struct DirectLayout {
  // Output rows are bucketed in bands, one or more per worker, so that no two workers
  // write the same cache lines of y (false sharing cost 20% at 2 threads).
  static int64_t bands(const RegionConvShape& s, int64_t workers) {
    return std::min(s.h_out(), std::max<int64_t>(1, (std::max<int64_t>(workers, 1) + s.n - 1) / s.n));
  }

  // x is read in place when nothing pads it (1x1 layers, mostly): the copy cost as much as
  // a tenth of the convolution there.
  static bool pads(const RegionConvShape& s) { return s.pad_h > 0 || s.pad_w > 0; }

  // Floats of filter scratch: every (sample, region) filter packed (OIHW). IHWO filters reach
  // this path only mixed, into their own space after the layout (region_conv_forward_direct).
  static int64_t filter_floats(const RegionConvShape& s) {
    if (s.layout != FilterLayout::kOIHW) return 0;
    return s.n * s.regions * direct::packed_filter_size(s.c_out, s.c_in, s.kh * s.kw);
  }

  int64_t x_padded, region, order, start, pixel_offset, filters, worker, worker_acc, worker_offsets, worker_stride,
      total;

  DirectLayout(const RegionConvShape& s, int64_t workers) {
    const int64_t hp = s.h + 2 * s.pad_h, wp = s.w + 2 * s.pad_w, pixels = s.pixels();
    const int64_t vectors = (s.c_out + direct::kLanes - 1) / direct::kLanes;
    x_padded = 0;
    region = x_padded + (pads(s) ? align(s.n * hp * wp * s.c_in * int64_t(sizeof(float))) : 0);
    order = region + align(s.n * pixels * int64_t(sizeof(int32_t)));
    start = order + align(s.n * pixels * int64_t(sizeof(int32_t)));
    pixel_offset = start + align(s.n * bands(s, workers) * (s.regions + 1) * int64_t(sizeof(int64_t)));
    filters = pixel_offset + align(pixels * int64_t(sizeof(int64_t)));
    worker = filters + align(filter_floats(s) * int64_t(sizeof(float)));
    worker_acc = 0;
    worker_offsets = align(direct::kBlockRows * vectors * direct::kLanes * int64_t(sizeof(float)));
    worker_stride = worker_offsets + align(direct::kBlock * int64_t(sizeof(int64_t)));
    total = worker + std::max<int64_t>(workers, 1) * worker_stride;
  }
};

// The one-phase path (region_conv_forward_local) for IHWO filters: each worker assigns
// regions, mixes the filters it needs (a mixture node) into its own scratch and convolves,
// with no hand-off in between. The phased path (mix, assign, convolve) entered the thread
// pool up to three times a call, and the filters one core mixed the other read, moving them
// between the cores' caches on every call: at 96x7x7 k1 R8 the mixture node ran slower on
// two threads than on one. Workers split
// - the samples, where there are enough (N >= workers);
// - else the output channels, each worker taking a window of every filter's columns and
//   assigning every pixel: for filters as given at maps up to 16x16 where the windows cost no
//   more vectors than the whole width (24 or 48 channels in two windows of 12 or 24, or any
//   at 28x28, lost 1-6% against the phased path, A/B); for a mixture at maps up to 32x32
//   where bands do not fit (its filters then never cross cores);
// - else bands of output rows: each worker assigns and convolves its own, pads the input rows
//   it reads into its own copy, and mixes every filter (so for a mixture only where mixing
//   is a small share of the work).
// A mixture that fits none keeps the phases.
struct LocalLayout {
  static constexpr int64_t kMaxPixels = 1024, kMaxPixelsAsGiven = 256;

  // How many of the last filters as given are read from a copy with slack: a row's last
  // output vector is read whole, up to 15 floats past C_out, which near the tensor's end is
  // past it (several filters back when a filter holds fewer than 15 floats).
  static int64_t tail_filters(const RegionConvShape& s) {
    if (s.c_out % direct::kLanes == 0) return 0;
    const int64_t size = s.c_out * s.c_in * s.kh * s.kw;
    return std::min(s.n * s.regions, (direct::kLanes - 1 + size - 1) / size);
  }

  enum class Split { kSamples, kChannels, kRows };

  // The first output channel of window `part` of `parts`: an even split, moved to the nearest
  // block of y's NCHWc layout where y has one (a window must store whole blocks).
  static int64_t window_start(const RegionConvShape& s, int64_t parts, int64_t part) {
    const int64_t c = s.c_out * part / parts;
    if (s.y_block == 0 || part == 0 || part == parts) return c;
    return std::min(s.c_out, (c + s.y_block / 2) / s.y_block * s.y_block);
  }

  bool usable = false;
  Split split = Split::kSamples;
  // A worker's output vectors, and a mixed filter's floats per row and in all (0: read as given).
  int64_t parts = 1, vectors = 0, row = 0, filter = 0, tail = 0;
  int64_t x_padded = 0, region = 0, order = 0, start = 0, pixel_offset = 0, filters = 0, acc = 0, offsets = 0,
          routing = 0, stride = 0, total = 0;

  // `bases`: a mixture's M, 0 for filters as given.
  LocalLayout(const RegionConvShape& s, int64_t workers, int64_t bases) {
    const bool mixture = bases > 0;
    workers = std::max<int64_t>(workers, 1);
    if (s.layout != FilterLayout::kIHWO || s.n == 0 || s.c_out == 0) return;
    const int64_t rows = s.c_in * s.kh * s.kw;
    if (s.n >= workers) {
      split = Split::kSamples;
      parts = workers;
      vectors = (s.c_out + direct::kLanes - 1) / direct::kLanes;
      row = s.c_out;
      filter = mixture ? mixture_stride(s) : 0;
      tail = mixture ? 0 : tail_filters(s);
    } else {
      parts = std::min(workers, (s.c_out + 7) / 8);  // windows of at least 8 channels
      int64_t widest = 0;
      for (int64_t part = 0; part < parts; ++part)
        widest = std::max(widest, window_start(s, parts, part + 1) - window_start(s, parts, part));
      const int64_t whole = (s.c_out + direct::kLanes - 1) / direct::kLanes;
      vectors = (widest + direct::kLanes - 1) / direct::kLanes;
      // A window's whole vectors lie within a row: C_out >= 16 * vectors.
      const bool windows = s.pixels() <= (mixture ? kMaxPixels : kMaxPixelsAsGiven) &&
                           s.c_out >= vectors * direct::kLanes && (mixture || parts * vectors <= whole);
      // Bands mix every filter on every worker: where that is a small share of the work.
      const bool bands = !mixture || 4 * s.regions * bases * workers <= s.pixels();
      if (windows && !(mixture && bands && s.pixels() > kMaxPixelsAsGiven)) {
        split = Split::kChannels;
        row = mixture ? vectors * direct::kLanes : s.c_out;
        filter = mixture ? rows * row : 0;
      } else {
        if (!bands) return;
        split = Split::kRows;
        parts = std::min(workers, s.h_out());
        vectors = whole;
        row = s.c_out;
        filter = mixture ? mixture_stride(s) : 0;
        tail = mixture ? 0 : tail_filters(s);
      }
    }
    usable = true;
    const int64_t hp = s.h + 2 * s.pad_h, wp = s.w + 2 * s.pad_w, pixels = s.pixels();
    const int64_t filter_floats =
        mixture ? s.regions * filter : (tail > 0 ? tail * s.c_out * rows + direct::kLanes : 0);
    x_padded = 0;
    region = x_padded + (DirectLayout::pads(s) ? align(hp * wp * s.c_in * int64_t(sizeof(float))) : 0);
    order = region + align(pixels * int64_t(sizeof(int32_t)));
    start = order + align(pixels * int64_t(sizeof(int32_t)));
    pixel_offset = start + align((s.regions + 1) * int64_t(sizeof(int64_t)));
    filters = pixel_offset + align(pixels * int64_t(sizeof(int64_t)));
    acc = filters + align(filter_floats * int64_t(sizeof(float)));
    // A window's stores read the accumulators up to one vector past its last row.
    offsets = acc + align((direct::kBlockRows + 1) * vectors * direct::kLanes * int64_t(sizeof(float)));
    routing = offsets + align(direct::kBlock * int64_t(sizeof(int64_t)));
    stride = routing + (mixture ? align(routing_floats(s, bases) * int64_t(sizeof(float))) : 0);
    total = parts * stride;
  }
};

// `filters` as given (IHWO), or null with `mixture`.
template <typename ParallelFor>
void region_conv_forward_local(const float* x, const float* filters, const float* guide, float* y,
                               const RegionConvShape& s, const ParallelFor& parallel_for, const LocalLayout& layout,
                               void* workspace, const direct::Kernels& kernels, const direct::Epilogue& epilogue,
                               const Mixture* mixture) {
  const int64_t pixels = s.pixels(), w_out = s.w_out(), rows = s.c_in * s.kh * s.kw, size = s.c_out * rows;
  const int64_t hp = s.h + 2 * s.pad_h, wp = s.w + 2 * s.pad_w, keys = s.n * s.regions;
  const bool pad = DirectLayout::pads(s);
  // Floats between x's pixels, and where its channels lie (NCHW, or NCHWc unpadded).
  const int64_t scale = s.x_block > 0 ? s.x_block : 1;
  const direct::Channels in =
      s.x_block > 0 ? direct::Channels{1, s.x_block, s.h * s.w * s.x_block} : direct::Channels{hp * wp, s.c_in, 0};
  parallel_for(layout.parts, [&](int64_t part) {
    char* mine = static_cast<char*>(workspace) + part * layout.stride;
    float* x_padded = reinterpret_cast<float*>(mine + layout.x_padded);
    int32_t* region = reinterpret_cast<int32_t*>(mine + layout.region);
    int32_t* order = reinterpret_cast<int32_t*>(mine + layout.order);
    int64_t* start = reinterpret_cast<int64_t*>(mine + layout.start);
    int64_t* pixel_offset = reinterpret_cast<int64_t*>(mine + layout.pixel_offset);
    float* scratch = reinterpret_cast<float*>(mine + layout.filters);
    float* acc = reinterpret_cast<float*>(mine + layout.acc);
    int64_t* offset = reinterpret_cast<int64_t*>(mine + layout.offsets);
    float* routing = reinterpret_cast<float*>(mine + layout.routing);
    // Samples [n0, n1) and output channels [c0, c1), computed as the whole vectors of the
    // window [first, first + 16 * vectors) within a row, which contains them.
    using Split = LocalLayout::Split;
    const bool by_sample = layout.split == Split::kSamples, windows = layout.split == Split::kChannels,
               by_rows = layout.split == Split::kRows;
    const int64_t n0 = by_sample ? s.n * part / layout.parts : 0;
    const int64_t n1 = by_sample ? s.n * (part + 1) / layout.parts : s.n;
    const int64_t c0 = windows ? LocalLayout::window_start(s, layout.parts, part) : 0;
    const int64_t c1 = windows ? LocalLayout::window_start(s, layout.parts, part + 1) : s.c_out;
    const int64_t first = windows ? std::min(c0, s.c_out - layout.vectors * direct::kLanes) : 0;
    // Output rows [oh0, oh1), pixels [p0, p1); and the input rows they read, [i0, i1).
    const int64_t oh0 = by_rows ? s.h_out() * part / layout.parts : 0;
    const int64_t oh1 = by_rows ? s.h_out() * (part + 1) / layout.parts : s.h_out();
    const int64_t p0 = oh0 * w_out, p1 = oh1 * w_out;
    const int64_t i0 = std::clamp<int64_t>(oh0 * s.stride_h - s.pad_h, 0, s.h);
    const int64_t i1 = std::clamp<int64_t>((oh1 - 1) * s.stride_h - s.pad_h + (s.kh - 1) * s.dil_h + 1, i0, s.h);
    const int64_t first_tail = keys - layout.tail;
    if (layout.tail > 0 && n1 * s.regions > first_tail) {
      std::memcpy(scratch, filters + first_tail * size, static_cast<size_t>(layout.tail * size) * sizeof(float));
      std::fill(scratch + layout.tail * size, scratch + layout.tail * size + direct::kLanes, 0.f);
    }
    // Region r's filter of sample n, at the window's first column.
    auto filter_of = [&](int64_t n, int64_t r) -> const float* {
      if (mixture != nullptr) return scratch + r * layout.filter;
      const int64_t key = n * s.regions + r;
      return (key >= first_tail ? scratch + (key - first_tail) * size : filters + key * size) + first;
    };
    pixel_offsets(s, oh0, oh1, pixel_offset, scale);
    if (mixture != nullptr && !windows)  // the slack after each whole filter, read (never stored)
      for (int64_t r = 0; r < s.regions; ++r)
        std::fill(scratch + r * layout.filter + size, scratch + (r + 1) * layout.filter, 0.0f);
    for (int64_t n = n0; n < n1; ++n) {
      const float* x_n = x + n * s.x_sample();
      if (pad) kernels.pad_rows(x_n, s.c_in, s.h, s.w, s.pad_h, s.pad_w, x_padded, i0, i1);
      kernels.assign(guide + n * s.regions * pixels, s.regions, pixels, p0, p1, region);
      bucket_pixels(region + p0, s.regions, p1 - p0, order + p0, start, p0);
      if (mixture != nullptr) {
        // A routed mixture's coefficients: every worker on a sample routes it (a few
        // thousand multiply-adds, where a hand-off would cost more).
        const float* z = mixture->coefficients + n * s.regions * mixture->bases;
        if (mixture->routing != nullptr) {
          route_sample(x_n, s, *mixture, kernels, routing, routing + s.c_in);
          z = routing + s.c_in;
        }
        if (windows)
          kernels.mix_window(z, mixture->basis, scratch, s.regions, mixture->bases, size, layout.filter, rows,
                             s.c_out, first, layout.vectors);
        else
          kernels.mix(z, mixture->basis, scratch, s.regions, mixture->bases, size, layout.filter, 0, size);
      }
      for (int64_t r = 0; r < s.regions; ++r)
        for (int64_t b = p0 + start[r]; b < p0 + start[r + 1]; b += direct::kBlock) {
          const int64_t count = std::min(direct::kBlock, p0 + start[r + 1] - b);
          for (int64_t j = 0; j < count; ++j) offset[j] = pixel_offset[order[b + j]];
          const direct::Block block{pad ? x_padded : x_n,
                                    offset,
                                    s.dil_h * wp * scale,
                                    s.dil_w * scale,
                                    in,
                                    s.kh,
                                    s.kw,
                                    s.c_in,
                                    count,
                                    filter_of(n, r),
                                    layout.row,
                                    layout.vectors,
                                    acc,
                                    order + b,
                                    s.y_block > 0 ? y + n * s.y_sample() : y + (n * s.c_out + c0) * pixels,
                                    c1 - c0,
                                    pixels,
                                    epilogue.bias == nullptr ? nullptr : epilogue.bias + c0,
                                    epilogue.relu,
                                    c0 - first,
                                    s.y_block,
                                    c0,
                                    s.c_out};
          (s.x_block > 0 ? kernels.convolve_blocked : kernels.convolve)(block);
        }
    }
  });
}

// `kernels`: one instruction set's variant (direct::kernels(), or any supported one in tests).
template <typename ParallelFor>
void region_conv_forward_direct(const float* x, const float* filters, const float* guide, float* y,
                                const RegionConvShape& s, const ParallelFor& parallel_for, int64_t workers,
                                void* workspace, const direct::Kernels& kernels,
                                const direct::Epilogue& epilogue = {}, const Mixture* mixture = nullptr) {
  LocalLayout local(s, workers, mixture != nullptr ? mixture->bases : 0);
  // The phased path reads NCHW only: a blocked call that fits no split runs on one worker.
  if (!local.usable && (s.x_block > 0 || s.y_block > 0)) local = LocalLayout(s, 1, mixture != nullptr ? mixture->bases : 0);
  if (local.usable)
    return region_conv_forward_local(x, filters, guide, y, s, parallel_for, local, workspace, kernels, epilogue,
                                     mixture);
  const DirectLayout layout(s, workers);
  char* base = static_cast<char*>(workspace);
  if (mixture != nullptr) {  // the mixed filters after the layout's workspace, then a routed one's
    // coefficients [N, R, M] and every sample's channel means
    float* mixed = reinterpret_cast<float*>(base + layout.total);
    const float* coefficients = mixture->coefficients;
    if (mixture->routing != nullptr) {
      float* routed = reinterpret_cast<float*>(base + layout.total + align(mixture_floats(s) * int64_t(sizeof(float))));
      float* means = routed + s.n * s.regions * mixture->bases;
      parallel_for(s.n, [&](int64_t n) {
        route_sample(x + n * s.c_in * s.h * s.w, s, *mixture, kernels, means + n * s.c_in,
                     routed + n * s.regions * mixture->bases);
      });
      coefficients = routed;
    }
    mix_filters_f32(coefficients, mixture->basis, mixed, s.n, s.regions, mixture->bases, s.c_out * s.patch(),
                    mixture_stride(s), parallel_for, workers, kernels);
    filters = mixed;
  }
  float* x_padded = reinterpret_cast<float*>(base + layout.x_padded);
  int32_t* region = reinterpret_cast<int32_t*>(base + layout.region);
  int32_t* order = reinterpret_cast<int32_t*>(base + layout.order);
  int64_t* start = reinterpret_cast<int64_t*>(base + layout.start);
  float* packed = reinterpret_cast<float*>(base + layout.filters);
  const int64_t pixels = s.pixels(), w_out = s.w_out(), taps = s.kh * s.kw;
  const int64_t wp = s.w + 2 * s.pad_w, x_padded_size = (s.h + 2 * s.pad_h) * wp * s.c_in;
  const int64_t packed_size = direct::packed_filter_size(s.c_out, s.c_in, taps);
  const int64_t vectors = (s.c_out + direct::kLanes - 1) / direct::kLanes;
  // IHWO filters come here only mixed (LocalLayout takes every call with filters as given),
  // spaced out with slack: they are read in place.
  const bool ihwo = s.layout == FilterLayout::kIHWO, pad = DirectLayout::pads(s);
  const int64_t filter_stride = mixture != nullptr ? mixture_stride(s) : s.c_out * s.c_in * taps;
  const float* x_read = pad ? x_padded : x;
  auto filter_of = [&](int64_t key) { return ihwo ? filters + key * filter_stride : packed + key * packed_size; };

  // One parallel phase: every filter packed, and per (sample, band of output rows) x's rows
  // padded, the band's regions, its pixels bucketed by region, and where each pixel's
  // receptive field starts (saves two integer divisions per pixel in the block loop).
  const int64_t bands = DirectLayout::bands(s, workers), units = s.n * bands, pad_bands = std::min(bands, s.h);
  // Filters are packed one group of 64 output channels per task, so that few large filters
  // (deep layers: R=2, C=K=192 is 2.6 MB) still spread over the workers.
  const int64_t groups = (vectors + direct::kGroup - 1) / direct::kGroup, group_rows = direct::kGroup * direct::kLanes;
  const int64_t packs = ihwo ? 0 : s.n * s.regions * groups, tasks = units + packs;
  auto first_row = [&](int64_t band) { return s.h_out() * band / bands; };
  int64_t* pixel_offset = reinterpret_cast<int64_t*>(base + layout.pixel_offset);
  auto run = [&](int64_t task) {
    if (task >= units) {
      const int64_t key = (task - units) / groups, g = (task - units) % groups;
      kernels.pack_filter(filters + key * filter_stride + g * group_rows * s.c_in * taps,
                          std::min(group_rows, s.c_out - g * group_rows), s.c_in, taps,
                          packed + key * packed_size + g * group_rows * s.c_in * taps);
      return;
    }
    const int64_t n = task / bands, band = task % bands;
    if (pad && band < pad_bands)
      kernels.pad_rows(x + n * s.c_in * s.h * s.w, s.c_in, s.h, s.w, s.pad_h, s.pad_w, x_padded + n * x_padded_size,
                       s.h * band / pad_bands, s.h * (band + 1) / pad_bands);
    const int64_t begin = first_row(band) * w_out, end = first_row(band + 1) * w_out;
    kernels.assign(guide + n * s.regions * pixels, s.regions, pixels, begin, end, region + n * pixels);
    bucket_pixels(region + n * pixels + begin, s.regions, end - begin, order + n * pixels + begin,
                  start + task * (s.regions + 1), begin);
    if (n == 0) pixel_offsets(s, first_row(band), first_row(band + 1), pixel_offset);  // the same for every sample
  };
  // Round robin, one range per worker: the thread pools hand out contiguous ranges, which
  // put every (light) band task on one worker and the (heavy) packs on the other.
  const int64_t lanes = std::min(workers, tasks);
  parallel_for(lanes, [&](int64_t lane) {
    for (int64_t task = lane; task < tasks; task += lanes) run(task);
  });

  // Blocks of up to kBlock pixels of one (sample, band, region), in contiguous ranges per worker.
  std::vector<Tile> blocks;
  for (int64_t u = 0; u < units; ++u) {
    const int64_t* st = start + u * (s.regions + 1);
    const int64_t n = u / bands, begin = first_row(u % bands) * w_out;
    for (int64_t r = 0; r < s.regions; ++r)
      for (int64_t b = st[r]; b < st[r + 1]; b += direct::kBlock)
        blocks.push_back({n, r, begin + b, std::min(direct::kBlock, st[r + 1] - b)});
  }
  const int64_t n_blocks = static_cast<int64_t>(blocks.size());
  // Each worker takes a contiguous range of blocks holding an equal number of pixels (blocks
  // are not all full), with every output channel.
  const int64_t parts = std::max<int64_t>(1, std::min(workers, n_blocks));
  std::vector<int64_t> first(static_cast<size_t>(parts + 1), n_blocks);
  first[0] = 0;
  for (int64_t b = 0, done = 0, part = 1; b < n_blocks && part < parts; ++b) {
    done += blocks[static_cast<size_t>(b)].count;
    while (part < parts && done * parts >= part * s.n * pixels) first[static_cast<size_t>(part++)] = b + 1;
  }
  parallel_for(parts, [&](int64_t worker) {
    char* mine = base + layout.worker + worker * layout.worker_stride;
    float* acc = reinterpret_cast<float*>(mine + layout.worker_acc);
    int64_t* offset = reinterpret_cast<int64_t*>(mine + layout.worker_offsets);
    for (int64_t b = first[static_cast<size_t>(worker)]; b < first[static_cast<size_t>(worker + 1)]; ++b) {
      const Tile& block = blocks[static_cast<size_t>(b)];
      const int32_t* pix = order + block.sample * pixels + block.begin;
      for (int64_t j = 0; j < block.count; ++j) offset[j] = pixel_offset[pix[j]];
      const direct::Block seg{x_read + block.sample * x_padded_size,
                                offset,
                                s.dil_h * wp,
                                s.dil_w,
                                direct::Channels{(s.h + 2 * s.pad_h) * wp, s.c_in, 0},
                                s.kh,
                                s.kw,
                                s.c_in,
                                block.count,
                                filter_of(block.sample * s.regions + block.region),
                                ihwo ? s.c_out : 0,
                                vectors,
                                acc,
                                pix,
                                y + block.sample * s.c_out * pixels,
                                s.c_out,
                                pixels,
                                epilogue.bias,
                                epilogue.relu};
      kernels.convolve(seg);
    }
  });
}

}  // namespace detail

// The float32 kernel (direct, no GEMM): what the ONNX Runtime op runs. Same contract as
// region_conv_forward below, minus the GEMM.
// `epilogue`: a bias and ReLU applied as the outputs are stored.
template <typename ParallelFor>
void region_conv_forward_f32(const float* x, const float* filters, const float* guide, float* y,
                             const RegionConvShape& s, const ParallelFor& parallel_for, int64_t workers,
                             void* workspace, const direct::Epilogue& epilogue = {},
                             const Mixture* mixture = nullptr) {
  if (s.n == 0 || s.c_out == 0) return;
  detail::region_conv_forward_direct(x, filters, guide, y, s, parallel_for, useful_workers(s, workers), workspace,
                                     direct::kernels(), epilogue, mixture);
}

// Bytes of scratch memory region_conv_forward needs for this shape and worker count.
// `bases`: a MixtureRegionConv2d call's M, whose filters are mixed into the workspace.
template <typename T>
int64_t region_conv_workspace_size(const RegionConvShape& s, int64_t workers, int64_t bases = 0) {
  if constexpr (std::is_same_v<T, float>) {
    // The phased path's mixed filters, then (routed) every sample's coefficients and channel means.
    const int64_t mixed = bases > 0 ? detail::align(mixture_floats(s) * int64_t(sizeof(float))) +
                                          detail::align(s.n * routing_floats(s, bases) * int64_t(sizeof(float)))
                                    : 0;
    // useful_workers may run a call on fewer workers than it was sized for.
    return std::max({detail::DirectLayout(s, workers).total + mixed, detail::LocalLayout(s, workers, bases).total,
                     detail::LocalLayout(s, 1, bases).total});
  }
  return detail::Layout<T>(s, workers).total;
}

// y[N, C_out, H_out, W_out] = region-wise conv of x with filters selected by guide.
//
// Gemm: callable gemm(m, n, k, a, b, c) computing c[m x n] = a[m x k] * b[n x k]^T,
//       all row-major and contiguous, single-threaded (it runs inside a worker).
// ParallelFor: callable parallel_for(count, fn) running fn(i) for i in [0, count),
//       possibly concurrently, at most `workers` at once.
// workspace: region_conv_workspace_size<T>(s, workers) bytes, 64-byte aligned.
// The shape must have passed validate(); inputs are contiguous.
template <typename T, typename Gemm, typename ParallelFor>
void region_conv_forward(const T* x, const T* filters, const T* guide, T* y, const RegionConvShape& s,
                         const Gemm& gemm, const ParallelFor& parallel_for, int64_t workers, void* workspace) {
  if (s.n == 0 || s.c_out == 0) return;
  workers = useful_workers(s, workers);
  if constexpr (std::is_same_v<T, float>) {  // float32: the direct kernel, faster than im2col + GEMM
    region_conv_forward_f32(x, filters, guide, y, s, parallel_for, workers, workspace);
    return;
  }
  const detail::Layout<T> layout(s, workers);
  char* base = static_cast<char*>(workspace);
  T* x_padded = reinterpret_cast<T*>(base + layout.x_padded);
  int32_t* region = reinterpret_cast<int32_t*>(base + layout.region);
  int32_t* order = reinterpret_cast<int32_t*>(base + layout.order);
  int64_t* start = reinterpret_cast<int64_t*>(base + layout.start);
  const int64_t pixels = s.pixels(), patch = s.patch(), w_out = s.w_out();
  const int64_t wp = s.w + 2 * s.pad_w, x_padded_size = (s.h + 2 * s.pad_h) * wp * s.c_in;
  const int64_t filter_size = s.c_out * patch;

  // Per sample, `bands` equal tasks: each transposes a band of rows of x and finds
  // the regions of a band of output pixels; then the (cheap) counting sort.
  const int64_t bands = std::min(s.h, std::max<int64_t>(1, (workers + s.n - 1) / s.n));
  parallel_for(s.n * bands, [&](int64_t task) {
    const int64_t n = task / bands, band = task % bands;
    detail::pad_channels_last(x + n * s.c_in * s.h * s.w, s, x_padded + n * x_padded_size, s.h * band / bands,
                              s.h * (band + 1) / bands);
    assign_regions(guide + n * s.regions * pixels, s.regions, pixels, pixels * band / bands,
                           pixels * (band + 1) / bands, region + n * pixels);
  });
  for (int64_t n = 0; n < s.n; ++n)
    detail::bucket_pixels(region + n * pixels, s.regions, pixels, order + n * pixels, start + n * (s.regions + 1));

  std::vector<detail::Tile> tiles;
  for (int64_t n = 0; n < s.n; ++n) {
    const int64_t* st = start + n * (s.regions + 1);
    for (int64_t r = 0; r < s.regions; ++r)
      for (int64_t b = st[r]; b < st[r + 1]; b += kTilePixels)
        tiles.push_back({n, r, b, std::min(kTilePixels, st[r + 1] - b)});
  }
  const int64_t n_tiles = static_cast<int64_t>(tiles.size());
  const int64_t used = std::min(workers, n_tiles);
  // Contiguous ranges of tiles per worker, so each reorders a filter only when its
  // range crosses into the next region; ranges split the pixels evenly.
  std::vector<int64_t> first_tile(static_cast<size_t>(used + 1), n_tiles);
  first_tile[0] = 0;
  for (int64_t t = 0, done = 0, w = 1; t < n_tiles && w < used; ++t) {
    done += tiles[t].count;
    while (w < used && done * used >= w * s.n * pixels) first_tile[w++] = t + 1;
  }
  parallel_for(used, [&](int64_t worker) {
    char* mine = base + layout.worker + worker * layout.worker_stride;
    T* rows = reinterpret_cast<T*>(mine + layout.worker_rows);
    T* out = reinterpret_cast<T*>(mine + layout.worker_out);
    T* weights = reinterpret_cast<T*>(mine + layout.worker_weights);
    int64_t loaded = -1;
    const int64_t run = s.kw * s.c_in;  // one contiguous patch row when dil_w == 1
    for (int64_t t = first_tile[worker]; t < first_tile[worker + 1]; ++t) {
      const detail::Tile& tile = tiles[t];
      const int64_t key = tile.sample * s.regions + tile.region;
      if (key != loaded) {
        detail::reorder_filter(filters + key * filter_size, s, weights);
        loaded = key;
      }
      const int32_t* pix = order + tile.sample * pixels + tile.begin;
      const T* xp = x_padded + tile.sample * x_padded_size;
      for (int64_t j = 0; j < tile.count; ++j) {
        const int64_t oh = pix[j] / w_out, ow = pix[j] % w_out;
        T* row = rows + j * patch;
        for (int64_t i = 0; i < s.kh; ++i) {
          const T* src = xp + ((oh * s.stride_h + i * s.dil_h) * wp + ow * s.stride_w) * s.c_in;
          if (s.dil_w == 1) {
            std::memcpy(row + i * run, src, static_cast<size_t>(run) * sizeof(T));
          } else {
            for (int64_t k = 0; k < s.kw; ++k)
              std::memcpy(row + i * run + k * s.c_in, src + k * s.dil_w * s.c_in,
                          static_cast<size_t>(s.c_in) * sizeof(T));
          }
        }
      }
      // out[C_out x count] = W_r[C_out x patch] * rows[count x patch]^T
      gemm(s.c_out, tile.count, patch, weights, rows, out);
      T* y_n = y + tile.sample * s.c_out * pixels;
      for (int64_t o = 0; o < s.c_out; ++o) {
        const T* src = out + o * tile.count;
        T* dst = y_n + o * pixels;
        for (int64_t j = 0; j < tile.count; ++j) dst[pix[j]] = src[j];
      }
    }
  });
}

}  // namespace drconv
