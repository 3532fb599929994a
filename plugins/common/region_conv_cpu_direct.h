// The float32 CPU path of the region-wise conv: a direct convolution over channels-last
// rows, with no im2col copy and no GEMM packing.
//
// Pixels are bucketed by region (as for the GEMM path) and taken in blocks of up to 64
// pixels of one region, wherever they lie. A block is convolved with its region's filter
// by a register-blocked micro-kernel: 6 pixels x 64 output channels of accumulators, one
// broadcast input value and one filter row of 64 channels per step, reading each pixel's
// input straight from the zero-padded channels-last copy of x through its own offset.
// Filters are packed once per (sample, region) as [channel group][tap][C_in][64], so the
// weights of one tap and 64 input channels (16 KiB) stay in L1 while every pixel of the
// block passes over them. The multiply-adds are those of one dense convolution, whether
// the regions are coherent blobs or scattered pixels.
//
// Portable C++ with GNU vector types (16 floats); compiled three times, for AVX-512,
// AVX2+FMA and the baseline, and picked at run time by the CPU's features.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>

namespace drconv {

struct RegionConvShape;

namespace direct {

constexpr int64_t kLanes = 16;         // floats per vector
constexpr int64_t kGroup = 4;          // vectors per output-channel group (64 channels)
constexpr int64_t kChannelBlock = 64;  // input channels per pass over the pixels
constexpr int64_t kBlock = 64;         // pixels per accumulator block

typedef float Vec __attribute__((vector_size(64), aligned(4)));  // unaligned-safe

// Floats of one (sample, region) packed filter: groups x taps x C_in x (vectors of the group x 16).
inline int64_t packed_filter_size(int64_t c_out, int64_t c_in, int64_t taps) {
  const int64_t vectors = (c_out + kLanes - 1) / kLanes;
  return vectors * kLanes * taps * c_in;
}

// f (C_out, C_in, kh, kw) -> [group][tap][c][v * 16 + lane], zero in the padding lanes.
// Taken one input channel at a time: the taps of (o, c) are contiguous in f, so each
// step reads 64 short runs and writes `taps` rows of 64 contiguous floats.
inline void pack_filter(const float* f, int64_t c_out, int64_t c_in, int64_t taps, float* out) {
  const int64_t vectors = (c_out + kLanes - 1) / kLanes;
  for (int64_t g0 = 0; g0 < vectors; g0 += kGroup) {
    const int64_t nb = std::min(kGroup, vectors - g0), width = nb * kLanes;
    for (int64_t c = 0; c < c_in; ++c)
      for (int64_t l = 0; l < width; ++l) {
        const int64_t o = g0 * kLanes + l;
        for (int64_t t = 0; t < taps; ++t)
          out[(t * c_in + c) * width + l] = o < c_out ? f[(o * c_in + c) * taps + t] : 0.f;
      }
    out += taps * c_in * width;
  }
}

// acc[p][v] += sum_c x[offset[p] + c] * w[c * w_step + v], for P pixels and NB vectors.
template <int P, int NB>
[[gnu::always_inline]] inline void micro(const float* x, const int64_t* offset, const float* w, int64_t w_step,
                                         int64_t channels, float* acc, int64_t acc_step) {
  const float* px[P];
  for (int p = 0; p < P; ++p) px[p] = x + offset[p];
  Vec a[P][NB];
  for (int p = 0; p < P; ++p)
    for (int v = 0; v < NB; ++v) std::memcpy(&a[p][v], acc + p * acc_step + v * kLanes, sizeof(Vec));
  for (int64_t c = 0; c < channels; ++c) {
    Vec wv[NB];
    for (int v = 0; v < NB; ++v) std::memcpy(&wv[v], w + c * w_step + v * kLanes, sizeof(Vec));
    for (int p = 0; p < P; ++p) {
      const float xs = px[p][c];
      for (int v = 0; v < NB; ++v) a[p][v] += wv[v] * xs;
    }
  }
  for (int p = 0; p < P; ++p)
    for (int v = 0; v < NB; ++v) std::memcpy(acc + p * acc_step + v * kLanes, &a[p][v], sizeof(Vec));
}

// One block's inputs: `pixels` output pixels of one sample and one region.
struct Block {
  const float* x;         // the sample's padded channels-last input
  const int64_t* offset;  // per pixel: where its tap (0, 0) starts in x
  int64_t row_step;     // floats between taps one dilation apart vertically (dil_h * Wp * C_in)
  int64_t col_step;     // floats between taps one dilation apart horizontally (dil_w * C_in)
  int64_t kh, kw, c_in, pixels;
  const float* w;       // packed filter of the region (pack_filter)
  int64_t vectors;      // output vectors (ceil(C_out / 16))
  float* acc;           // [pixels][vectors * 16] scratch, overwritten
};

// The last `count` (< Q + 1) pixels of a block: one micro-kernel instantiation per length.
template <int Q, int NB>
[[gnu::always_inline]] inline void tail(int64_t count, const float* x, const int64_t* offset, const float* w,
                                        int64_t w_step, int64_t cb, float* acc, int64_t acc_step) {
  if constexpr (Q > 0) {
    if (count == Q) return micro<Q, NB>(x, offset, w, w_step, cb, acc, acc_step);
    tail<Q - 1, NB>(count, x, offset, w, w_step, cb, acc, acc_step);
  }
}

template <int P, int NB>
[[gnu::always_inline]] inline void pass(const Block& s, const float* x, const float* w, int64_t w_step, int64_t cb,
                                        float* acc, int64_t acc_step) {
  int64_t p = 0;
  for (; p + P <= s.pixels; p += P) micro<P, NB>(x, s.offset + p, w, w_step, cb, acc + p * acc_step, acc_step);
  tail<P - 1, NB>(s.pixels - p, x, s.offset + p, w, w_step, cb, acc + p * acc_step, acc_step);
}

// The whole block: every group of output channels, tap and block of input channels.
// P pixels per micro-tile and at most MAX_NB vectors at once fit the ISA's registers.
template <int P, int MAX_NB>
[[gnu::always_inline]] inline void convolve_block(const Block& s) {
  const int64_t acc_step = s.vectors * kLanes;
  std::fill(s.acc, s.acc + s.pixels * acc_step, 0.f);
  const float* w_group = s.w;
  for (int64_t g0 = 0; g0 < s.vectors; g0 += kGroup) {
    const int64_t nb_group = std::min(kGroup, s.vectors - g0), w_step = nb_group * kLanes;
    for (int64_t i = 0; i < s.kh; ++i)
      for (int64_t j = 0; j < s.kw; ++j) {
        const float* x_tap = s.x + i * s.row_step + j * s.col_step;
        const float* w_tap = w_group + (i * s.kw + j) * s.c_in * w_step;
        for (int64_t c0 = 0; c0 < s.c_in; c0 += kChannelBlock) {
          const int64_t cb = std::min(kChannelBlock, s.c_in - c0);
          for (int64_t v0 = 0; v0 < nb_group; v0 += MAX_NB) {
            const float* w = w_tap + c0 * w_step + v0 * kLanes;
            float* acc = s.acc + (g0 + v0) * kLanes;
            switch (std::min<int64_t>(MAX_NB, nb_group - v0)) {
              case 4: if constexpr (MAX_NB >= 4) pass<P, 4>(s, x_tap + c0, w, w_step, cb, acc, acc_step); break;
              case 3: if constexpr (MAX_NB >= 3) pass<P, 3>(s, x_tap + c0, w, w_step, cb, acc, acc_step); break;
              case 2: if constexpr (MAX_NB >= 2) pass<P, 2>(s, x_tap + c0, w, w_step, cb, acc, acc_step); break;
              default: pass<P, 1>(s, x_tap + c0, w, w_step, cb, acc, acc_step); break;
            }
          }
        }
      }
    w_group += s.kh * s.kw * s.c_in * w_step;
  }
}

#if defined(__x86_64__) && defined(__GNUC__)
// 32 vector registers: 6 x 4 accumulators + 4 weights + 1 broadcast.
__attribute__((target("avx512f,fma"))) inline void convolve_block_avx512(const Block& s) {
  convolve_block<6, 4>(s);
}
// 16 registers of 8 floats, two per vector: 3 x 2 accumulators + 2 weights.
__attribute__((target("avx2,fma"))) inline void convolve_block_avx2(const Block& s) { convolve_block<3, 2>(s); }
#endif
inline void convolve_block_baseline(const Block& s) { convolve_block<2, 1>(s); }

using BlockFn = void (*)(const Block&);

// The fastest variant this CPU runs.
inline BlockFn block_kernel() {
#if defined(__x86_64__) && defined(__GNUC__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) return convolve_block_avx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return convolve_block_avx2;
#endif
  return convolve_block_baseline;
}

}  // namespace direct
}  // namespace drconv
