// The float32 CPU path of the region-wise conv: a direct convolution over x's own NCHW
// planes, with no im2col copy and no GEMM packing.
//
// Pixels are bucketed by region (as for the GEMM path) and taken in blocks of up to 72
// pixels of one region, wherever they lie. A block is convolved with its region's filter
// by a register-blocked micro-kernel: 6 pixels x 64 output channels of accumulators held
// in registers through the whole reduction (C_in x taps), one broadcast input value and
// one filter row of 64 channels per step, reading each pixel's input straight from the
// zero-padded copy of x (still NCHW: padding is a row copy, not a transpose) through its
// own offset and the channel stride. OIHW filters are packed once per (sample, region) as
// [channel group][C_in][tap][64]: the reduction runs in the filter's own (C_in, tap)
// order, so packing is a plain 16 x 16 block transpose with both sides contiguous, and
// the weights stream in order. IHWO filters ([C_in][tap][C_out]) are read as they are,
// a 64-channel window of each row: at small maps packing cost more than the convolution.
// The block's outputs go to y through 16 x 16 register transposes. The multiply-adds are
// those of one dense convolution, whether the regions are coherent blobs or scattered pixels.
//
// x and y may also be in ONNX Runtime's blocked NCHWc layout (RegionConvShape::x_block,
// y_block): the micro-kernel then walks x's channels block by block (a pixel's channels of
// a block are contiguous), and each accumulator vector is stored whole at its pixel.
//
// Portable C++ with GNU vector types (16 floats); compiled for AVX-512, AVX2+FMA and the
// baseline (the block kernel twice each: x in NCHW, x in NCHWc), and picked at run time by
// the CPU's features.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#endif

#include "region_conv_shape.h"

namespace drconv {

namespace direct {

constexpr int64_t kLanes = 16;         // floats per vector
constexpr int64_t kGroup = 4;          // vectors per output-channel group (64 channels)
constexpr int64_t kBlock = 72;         // pixels per accumulator block: 12 micro-tiles of 6
constexpr int64_t kBlockRows = (kBlock + 15) / 16 * 16;  // accumulator rows: the output transposes read 16 at a time

typedef float Vec __attribute__((vector_size(64), aligned(4)));  // unaligned-safe

// Floats of one (sample, region) packed filter: groups x C_in x taps x (vectors of the group x 16).
inline int64_t packed_filter_size(int64_t c_out, int64_t c_in, int64_t taps) {
  const int64_t vectors = (c_out + kLanes - 1) / kLanes;
  return vectors * kLanes * taps * c_in;
}

typedef int32_t Mask __attribute__((vector_size(64)));

// The permutes of transpose16, round by round (sub-blocks of 8, 4, 2, 1): low takes lanes t
// of a and, where bit b of t is set, lane t - b of c; high takes lanes t + b of a and lanes t
// of c. Built at compile time: built in the loop, GCC assembled them lane by lane on every
// call (14% of the kernel at 96x7x7 k1 R8, perf).
struct ShuffleMasks {
  int32_t low[4][16], high[4][16];
};

constexpr ShuffleMasks make_shuffle_masks() {
  ShuffleMasks m{};
  for (int round = 0, b = 8; round < 4; ++round, b /= 2)
    for (int t = 0; t < 16; ++t) {
      m.low[round][t] = (t & b) ? 16 + t - b : t;
      m.high[round][t] = (t & b) ? 16 + t : t + b;
    }
  return m;
}

inline constexpr ShuffleMasks kShuffleMasks = make_shuffle_masks();

// One round of transpose16: swap the off-diagonal sub-blocks of size B. Every loop is
// unrolled so that r stays in registers (with a run-time round the rows went through the
// stack: 20% of the kernel at 96x7x7 k1 R8).
template <int B, int kRound>
[[gnu::always_inline]] inline void transpose_round(Vec (&r)[16]) {
  Mask low, high;
  std::memcpy(&low, kShuffleMasks.low[kRound], sizeof(Mask));
  std::memcpy(&high, kShuffleMasks.high[kRound], sizeof(Mask));
  // Pairs (i, i + B) with bit B clear in i, walked so that i + B < 16 is plain to the
  // compiler (GCC 14 warned -Warray-bounds on the filtered loop).
#pragma GCC unroll 16
  for (int base = 0; base < 16; base += 2 * B) {
#pragma GCC unroll 16
    for (int i = base; i < base + B; ++i) {
      const Vec a = r[i], c = r[i + B];
      r[i] = __builtin_shuffle(a, c, low);
      r[i + B] = __builtin_shuffle(a, c, high);
    }
  }
}

// Transposes 16 rows of 16 floats in place: four rounds of swapping the off-diagonal
// sub-blocks of size 8, 4, 2, 1 (each a two-source permute, one instruction on AVX-512).
[[gnu::always_inline]] inline void transpose16(Vec (&r)[16]) {
  transpose_round<8, 0>(r);
  transpose_round<4, 1>(r);
  transpose_round<2, 2>(r);
  transpose_round<1, 3>(r);
}

// dst[k][i] = src[i][k] for a full 16 x 16 block given by its row pointers.
[[gnu::always_inline]] inline void transpose_block(const float* const (&src)[16], float* const (&dst)[16]) {
  Vec r[16];
  for (int i = 0; i < 16; ++i) std::memcpy(&r[i], src[i], sizeof(Vec));
  transpose16(r);
  for (int k = 0; k < 16; ++k) std::memcpy(dst[k], &r[k], sizeof(Vec));
}

// f (C_out, C_in, kh, kw) -> [group][c][tap][v * 16 + lane], zero in the padding lanes.
// f is a [C_out][C_in * taps] matrix; packing transposes it in 16 x 16 blocks, column
// k = c * taps + t becoming row k of its group. (Rows in [tap][c] order instead scattered
// each block's 16 stores C_in rows apart, 16 KiB at C_in=64: packing then took 30% as
// long as the convolution.) Edges go one value at a time.
[[gnu::always_inline]] inline void pack_filter_impl(const float* f, int64_t c_out, int64_t c_in, int64_t taps,
                                                    float* out) {
  const int64_t vectors = (c_out + kLanes - 1) / kLanes, patch = c_in * taps;
  for (int64_t g0 = 0; g0 < vectors; g0 += kGroup) {
    const int64_t nb = std::min(kGroup, vectors - g0), width = nb * kLanes;
    auto row = [&](int64_t k) { return out + k * width; };
    for (int64_t l0 = 0; l0 < width; l0 += kLanes) {
      const int64_t o0 = g0 * kLanes + l0;
      int64_t k0 = 0;
      if (o0 + kLanes <= c_out) {
        for (; k0 + kLanes <= patch; k0 += kLanes) {
          const float* src[16];
          float* dst[16];
          for (int i = 0; i < 16; ++i) src[i] = f + (o0 + i) * patch + k0;
          // The source rows are 4 KiB or more apart: prefetching 4 blocks ahead took
          // packing 8 filters (C=K=64, 3x3) from 157 to 142 us, hot in L3.
          for (int i = 0; i < 16; ++i) __builtin_prefetch(src[i] + 4 * kLanes);
          for (int k = 0; k < 16; ++k) dst[k] = row(k0 + k) + l0;
          transpose_block(src, dst);
        }
      }
      for (int64_t k = k0; k < patch; ++k)
        for (int64_t l = l0; l < l0 + kLanes; ++l) row(k)[l] = o0 + (l - l0) < c_out ? f[(o0 + l - l0) * patch + k] : 0.f;
    }
    out += taps * c_in * width;
  }
}

// Rows [row_begin, row_end) of x (C, H, W) -> zero-padded (C, Hp, Wp), with the pad rows
// above the first and below the last: a copy, not a transpose (the micro-kernel reads
// each channel's plane through its stride).
[[gnu::always_inline]] inline void pad_rows_impl(const float* x, int64_t c, int64_t h, int64_t w, int64_t pad_h,
                                                 int64_t pad_w, float* out, int64_t row_begin, int64_t row_end) {
  const int64_t wp = w + 2 * pad_w, hp = h + 2 * pad_h;
  for (int64_t ch = 0; ch < c; ++ch) {
    const float* src = x + ch * h * w;
    float* plane = out + ch * hp * wp;
    if (row_begin == 0) std::fill(plane, plane + pad_h * wp, 0.f);
    if (row_end == h) std::fill(plane + (pad_h + h) * wp, plane + hp * wp, 0.f);
    for (int64_t i = row_begin; i < row_end; ++i) {
      float* dst = plane + (i + pad_h) * wp;
      std::fill(dst, dst + pad_w, 0.f);
      std::memcpy(dst + pad_w, src + i * w, static_cast<size_t>(w) * sizeof(float));
      std::fill(dst + pad_w + w, dst + wp, 0.f);
    }
  }
}

// How a sample's input channels lie: channel c of pixel p at p * pixel_step + (c / lanes) *
// block_step + (c % lanes) * lane_step. NCHW is one block of every channel, lane_step the
// plane; ONNX Runtime's NCHWc is blocks of `lanes` channels, contiguous per pixel.
struct Channels {
  int64_t lane_step, lanes, block_step;
};

// acc[p][v] = sum_{c, t} x[offset[p] + taps[t] + at(c)] * w[c * c_step + t * w_step + v],
// for P pixels and NB vectors, at(c) as Channels says.
// NT > 0: n_taps == NT, known to the compiler, which then unrolls the tap loop.
// Blocked: x in NCHWc (blocks of in.lanes channels); else NCHW, one run of channels a plane
// apart. Two instantiations, not a run-time branch: the loop over blocks cost NCHW 2-8% at
// the zoo's small layers, and a branch inside the tile cost the 3x3 layers 4-7%.
template <int P, int NB, int NT = 0, bool Blocked = false>
[[gnu::always_inline]] inline void micro(const float* x, const int64_t* offset, const int64_t* taps, int64_t n_taps,
                                         Channels in, const float* w, int64_t w_step, int64_t c_step,
                                         int64_t channels, float* acc, int64_t acc_step) {
  Vec a[P][NB] = {};
  const float* px[P];
  for (int p = 0; p < P; ++p) px[p] = x + offset[p];
  if constexpr (NT > 0) n_taps = NT;
  if constexpr (Blocked) {
    for (int64_t c0 = 0, block = 0; c0 < channels; c0 += in.lanes, block += in.block_step) {
      const int64_t lanes = std::min(in.lanes, channels - c0);
      for (int64_t l = 0; l < lanes; ++l, w += c_step) {
        for (int64_t t = 0; t < n_taps; ++t) {
          const int64_t at = taps[t] + block + l * in.lane_step;
          Vec wv[NB];
          for (int v = 0; v < NB; ++v) std::memcpy(&wv[v], w + t * w_step + v * kLanes, sizeof(Vec));
          for (int p = 0; p < P; ++p) {
            const float xs = px[p][at];
            for (int v = 0; v < NB; ++v) a[p][v] += wv[v] * xs;
          }
        }
      }
    }
  } else {
    for (int64_t c = 0; c < channels; ++c, w += c_step) {
      for (int64_t t = 0; t < n_taps; ++t) {
        const int64_t at = taps[t] + c * in.lane_step;
        Vec wv[NB];
        for (int v = 0; v < NB; ++v) std::memcpy(&wv[v], w + t * w_step + v * kLanes, sizeof(Vec));
        for (int p = 0; p < P; ++p) {
          const float xs = px[p][at];
          for (int v = 0; v < NB; ++v) a[p][v] += wv[v] * xs;
        }
      }
    }
  }
  for (int p = 0; p < P; ++p)
    for (int v = 0; v < NB; ++v) std::memcpy(acc + p * acc_step + v * kLanes, &a[p][v], sizeof(Vec));
}

// One block's inputs: `pixels` output pixels of one sample and one region.
struct Block {
  const float* x;         // the sample's input: zero-padded [C_in][Hp][Wp], or blocked (unpadded)
  const int64_t* offset;  // per pixel: where its tap (0, 0) starts in channel 0 of x
  int64_t row_step;     // floats between taps one dilation apart vertically (dil_h * Wp, times the block)
  int64_t col_step;     // floats between taps one dilation apart horizontally (dil_w, times the block)
  Channels in;          // where x's channels lie
  int64_t kh, kw, c_in, pixels;
  const float* w;       // the region's filter: packed (pack_filter), or IHWO as given
  int64_t w_row;        // 0: w is packed; else floats between its (C_in, tap) rows (IHWO: C_out)
  int64_t vectors;      // output vectors (ceil(C_out / 16))
  float* acc;           // [kBlockRows][vectors * 16] scratch (and 16 floats of slack with skip), overwritten
  const int32_t* pixel; // the block's output pixels (indices into H_out * W_out), ascending
  float* y;             // NCHW: the sample's output at its first stored channel; blocked: the sample's output
  int64_t c_out, plane; // the channels stored (from the window's first), H_out * W_out
  const float* bias;    // [C_out] added to y (from the first stored channel), or null
  bool relu;            // then y = max(y, 0), NaN kept (as torch.relu)
  int64_t skip = 0;     // accumulator channels before the first one stored (a window that starts before c_out's)
  // y in ONNX Runtime's NCHWc layout: its block (0: NCHW), the first stored channel (a multiple
  // of the block) and every channel of y (the padding lanes after the last are stored as 0).
  int64_t y_block = 0, y_first = 0, y_channels = 0;
};

// What the node applies to its outputs as it stores them (the BatchNormalization and ReLU
// that follow a region conv, folded in at export).
struct Epilogue {
  const float* bias = nullptr;  // [C_out]
  bool relu = false;
};

// acc [pixel][channel] -> y in NCHWc: a pixel's channels of one block are contiguous, so each
// accumulator vector goes out as it is, 16 / B stores of B floats (in NCHW each channel is a
// store of its own: at scattered regions that was a fifth of the kernel). Lanes past the
// node's last channel are stored as 0: they are the layout's padding, which ONNX Runtime's
// own NCHWc kernels read. A window starts on a block and ends on one or at C_out, so no two
// workers store into one block.
template <int64_t B>
[[gnu::always_inline]] inline void store_blocked(const Block& s) {
  const int64_t acc_step = s.vectors * kLanes, last = s.y_first + s.c_out;
  const int64_t end = last == s.y_channels ? (last + B - 1) / B * B : last;  // padding included
  const Vec zero = {}, lane = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
  for (int64_t k0 = 0; s.y_first + k0 < end; k0 += kLanes) {
    const Vec real = lane < static_cast<float>(s.c_out - k0) ? lane - lane + 1 : zero;  // 1 on y's channels
    Vec bias = {};
    if (s.bias != nullptr) {
      if (k0 + kLanes <= s.c_out)
        std::memcpy(&bias, s.bias + k0, sizeof(Vec));
      else
        for (int64_t l = 0; k0 + l < s.c_out; ++l) bias[l] = s.bias[k0 + l];
    }
    const int64_t stores = std::min(kLanes, end - s.y_first - k0) / B;
    float* y = s.y + (s.y_first + k0) / B * s.plane * B;
    for (int64_t i = 0; i < s.pixels; ++i) {
      Vec r;
      std::memcpy(&r, s.acc + i * acc_step + s.skip + k0, sizeof(Vec));
      r += bias;
      if (s.relu) r = r < zero ? zero : r;
      r = real > zero ? r : zero;
      float* at = y + s.pixel[i] * B;
      if (stores * B == kLanes && B == kLanes) {
        std::memcpy(at, &r, sizeof(Vec));
      } else {
        for (int64_t h = 0; h < stores; ++h)
          std::memcpy(at + h * s.plane * B, reinterpret_cast<const float*>(&r) + h * B, B * sizeof(float));
      }
    }
  }
}

// acc [pixel][channel] -> y [channel][pixel], 16 x 16 at a time: a run of 16 consecutive
// pixels (the common case: regions are coherent) is one 16-float store per channel.
[[gnu::always_inline]] inline void store_block(const Block& s) {
  const int64_t acc_step = s.vectors * kLanes;
  for (int64_t j0 = 0; j0 < s.pixels; j0 += kLanes) {
    const int64_t rows = std::min(kLanes, s.pixels - j0);
    const bool run = rows == kLanes && s.pixel[j0 + kLanes - 1] - s.pixel[j0] == kLanes - 1;
    for (int64_t o0 = 0; o0 < s.c_out; o0 += kLanes) {
      Vec r[16];
      for (int i = 0; i < 16; ++i)  // rows past the block's end are scratch: read, never stored
        std::memcpy(&r[i], s.acc + (j0 + i) * acc_step + s.skip + o0, sizeof(Vec));
      transpose16(r);
      const int64_t channels = std::min(kLanes, s.c_out - o0);
      if (s.bias != nullptr)
        for (int64_t k = 0; k < channels; ++k) r[k] += s.bias[o0 + k];
      if (s.relu) {
        const Vec zero = {};
        for (int64_t k = 0; k < channels; ++k) r[k] = r[k] < zero ? zero : r[k];
      }
      for (int64_t k = 0; k < channels; ++k) {
        float* y_o = s.y + (o0 + k) * s.plane;
        if (run) {
          std::memcpy(y_o + s.pixel[j0], &r[k], sizeof(Vec));
        } else {
          for (int64_t i = 0; i < rows; ++i) y_o[s.pixel[j0 + i]] = r[k][i];
        }
      }
    }
  }
}

// The last `count` (< Q + 1) pixels of a block: one micro-kernel instantiation per length.
template <int Q, int NB, bool Blocked>
[[gnu::always_inline]] inline void tail(int64_t count, const float* x, const int64_t* offset, const int64_t* taps,
                                        int64_t n_taps, Channels plane, const float* w, int64_t w_step,
                                        int64_t c_step, int64_t c_in, float* acc, int64_t acc_step) {
  if constexpr (Q > 0) {
    if (count == Q)
      return micro<Q, NB, 0, Blocked>(x, offset, taps, n_taps, plane, w, w_step, c_step, c_in, acc, acc_step);
    tail<Q - 1, NB, Blocked>(count, x, offset, taps, n_taps, plane, w, w_step, c_step, c_in, acc, acc_step);
  }
}

// micro<rows, nb> for run-time rows <= P and nb <= MAX_NB.
template <int P, int MAX_NB, bool Blocked, int NB = MAX_NB>
[[gnu::always_inline]] inline void micro_any(int64_t rows, int64_t nb, const float* x, const int64_t* offset,
                                             const int64_t* taps, int64_t n_taps, Channels plane, const float* w,
                                             int64_t w_step, int64_t c_step, int64_t c_in, float* acc,
                                             int64_t acc_step) {
  if constexpr (NB >= 1) {
    if (nb == NB) {
      if (rows == P && n_taps == 9)  // 3 x 3, the common kernel: the full tile with its tap loop unrolled
        return micro<P, NB, 9, Blocked>(x, offset, taps, n_taps, plane, w, w_step, c_step, c_in, acc, acc_step);
      if (rows == P && n_taps == 1)  // 1 x 1, the mixture models' kernel: no tap loop at all
        return micro<P, NB, 1, Blocked>(x, offset, taps, n_taps, plane, w, w_step, c_step, c_in, acc, acc_step);
      if (rows == P)
        return micro<P, NB, 0, Blocked>(x, offset, taps, n_taps, plane, w, w_step, c_step, c_in, acc, acc_step);
      return tail<P - 1, NB, Blocked>(rows, x, offset, taps, n_taps, plane, w, w_step, c_step, c_in, acc, acc_step);
    }
    micro_any<P, MAX_NB, Blocked, NB - 1>(rows, nb, x, offset, taps, n_taps, plane, w, w_step, c_step, c_in, acc,
                                          acc_step);
  }
}

// The whole block: every group of output channels, each micro-tile of P pixels running
// the full reduction (taps x C_in) with its accumulators in registers; then y.
// P pixels per micro-tile and at most MAX_NB vectors at once fit the ISA's registers.
// Blocked: x in NCHWc (micro's).
template <int P, int MAX_NB, bool Blocked>
[[gnu::always_inline]] inline void convolve_block(const Block& s) {
  const int64_t acc_step = s.vectors * kLanes, n_taps = s.kh * s.kw;
  int64_t taps[64];  // tap offsets in x; kernels up to 8x8 (larger ones take the loop below in pieces)
  const float* w_group = s.w;
  for (int64_t g0 = 0; g0 < s.vectors; g0 += kGroup) {
    // Packed: each group's rows are contiguous, nb_group vectors wide. IHWO: a group is a
    // 64-channel window of every full-width row.
    const int64_t nb_group = std::min(kGroup, s.vectors - g0);
    const int64_t w_step = s.w_row > 0 ? s.w_row : nb_group * kLanes, c_step = n_taps * w_step;
    if (s.w_row > 0) w_group = s.w + g0 * kLanes;
    for (int64_t t0 = 0; t0 < n_taps; t0 += 64) {
      const int64_t count = std::min<int64_t>(64, n_taps - t0);
      for (int64_t t = 0; t < count; ++t)
        taps[t] = ((t0 + t) / s.kw) * s.row_step + ((t0 + t) % s.kw) * s.col_step;
      const float* w_taps = w_group + t0 * w_step;
      for (int64_t v0 = 0; v0 < nb_group; v0 += MAX_NB) {
        const float* w = w_taps + v0 * kLanes;
        const int64_t nb = std::min<int64_t>(MAX_NB, nb_group - v0);
        for (int64_t p = 0; p < s.pixels; p += P) {
          float* acc = s.acc + p * acc_step + (g0 + v0) * kLanes;
          const int64_t rows = std::min<int64_t>(P, s.pixels - p);
          if (t0 > 0) {  // a kernel with more than 64 taps: add this piece to the last one
            float partial[P * MAX_NB * kLanes];
            micro_any<P, MAX_NB, Blocked>(rows, nb, s.x, s.offset + p, taps, count, s.in, w, w_step, c_step,
                                          s.c_in, partial, MAX_NB * kLanes);
            for (int64_t i = 0; i < rows; ++i)
              for (int64_t l = 0; l < nb * kLanes; ++l) acc[i * acc_step + l] += partial[i * MAX_NB * kLanes + l];
          } else {
            micro_any<P, MAX_NB, Blocked>(rows, nb, s.x, s.offset + p, taps, count, s.in, w, w_step, c_step,
                                          s.c_in, acc, acc_step);
          }
        }
      }
    }
    if (s.w_row == 0) w_group += n_taps * s.c_in * w_step;
  }
  if (s.y_block == 16)
    store_blocked<16>(s);
  else if (s.y_block == 8)
    store_blocked<8>(s);
  else if (s.y_block == 4)
    store_blocked<4>(s);
  else
    store_block(s);
}

#if defined(__x86_64__) && defined(__GNUC__)
// assign_regions (region_conv_shape.h: first argmax over R, NaN the maximum, the first NaN
// winning), 16 pixels at a time in AVX-512 mask registers (GCC scalarises the GNU-vector
// form of these blends).
__attribute__((target("avx512f"))) inline void assign_avx512(const float* guide, int64_t regions, int64_t pixels,
                                                              int64_t begin, int64_t end, int32_t* region) {
  int64_t p = begin;
  for (; p + kLanes <= end; p += kLanes) {
    __m512 best = _mm512_loadu_ps(guide + p);
    __mmask16 done = _mm512_cmp_ps_mask(best, best, _CMP_UNORD_Q);
    __m512i index = _mm512_setzero_si512();
    for (int64_t r = 1; r < regions; ++r) {
      const __m512 v = _mm512_loadu_ps(guide + r * pixels + p);
      const __mmask16 nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
      const __mmask16 take = static_cast<__mmask16>(~done & (nan | _mm512_cmp_ps_mask(v, best, _CMP_GT_OQ)));
      best = _mm512_mask_mov_ps(best, take, v);
      index = _mm512_mask_set1_epi32(index, take, static_cast<int32_t>(r));
      done = static_cast<__mmask16>(done | nan);
    }
    _mm512_storeu_si512(region + p, index);
  }
  assign_regions(guide, regions, pixels, p, end, region);
}
#endif

// One sample's mixed filters (the MixtureRegionConv2d node, docs/region_conv_op.md):
// f[r * stride + l] = sum over m of z[r][m] * basis[m * size + l], for l in [begin, end).
// Per V vectors of l, H regions' sums are held in registers while the M basis rows stream
// past: H independent FMA chains keep the FMA units busy (summing one region at a time made
// every FMA wait on the one before: 2.6x slower at a 96x96 1x1 filter, M = R = 8), and each
// z[r][m] broadcast serves V FMAs. With V = 1 the broadcasts outnumbered the FMAs' other
// loads eight to one and the M rows, a filter apart, were read one vector per visit.
template <int H, int V>
[[gnu::always_inline]] inline void mix_regions(const float* z, const float* basis, float* f, int64_t held,
                                               int64_t bases, int64_t size, int64_t stride) {
  Vec acc[H][V] = {};
  for (int64_t m = 0; m < bases; ++m) {
    Vec b[V];
#pragma GCC unroll 4
    for (int v = 0; v < V; ++v) b[v] = *reinterpret_cast<const Vec*>(basis + m * size + v * kLanes);
#pragma GCC unroll 16
    for (int r = 0; r < H; ++r)
      if (H == held || r < held) {
        const float zr = z[r * bases + m];
#pragma GCC unroll 4
        for (int v = 0; v < V; ++v) acc[r][v] += zr * b[v];
      }
  }
#pragma GCC unroll 16
  for (int r = 0; r < H; ++r)
    if (H == held || r < held)
#pragma GCC unroll 4
      for (int v = 0; v < V; ++v) *reinterpret_cast<Vec*>(f + r * stride + v * kLanes) = acc[r][v];
}

// V vectors (16 V floats at basis + m * size) of every region's mixed filter, stored at f + r * stride.
template <int H, int V = 1>
[[gnu::always_inline]] inline void mix_vector(const float* z, const float* basis, float* f, int64_t regions,
                                              int64_t bases, int64_t size, int64_t stride) {
  for (int64_t r0 = 0; r0 < regions; r0 += H) {
    const int64_t held = std::min<int64_t>(H, regions - r0);
    if (held == H)
      mix_regions<H, V>(z + r0 * bases, basis, f + r0 * stride, H, bases, size, stride);
    else
      mix_regions<H, V>(z + r0 * bases, basis, f + r0 * stride, held, bases, size, stride);
  }
}

// V: vectors mixed per pass where the range allows (registers: H x V accumulators).
template <int H, int V>
[[gnu::always_inline]] inline void mix_impl(const float* z, const float* basis, float* f, int64_t regions,
                                            int64_t bases, int64_t size, int64_t stride, int64_t begin,
                                            int64_t end) {
  // A range that does not end on a whole vector ends with one that overlaps the vector
  // before (the sums are recomputed, not added to, so writing them twice is harmless): a
  // scalar tail cost as much as the rest at 232 output channels split over two workers.
  const bool overlap = end - begin >= kLanes;
  int64_t l = begin;
  if constexpr (V > 1)
    for (; l + V * kLanes <= end; l += V * kLanes) mix_vector<H, V>(z, basis + l, f + l, regions, bases, size, stride);
  for (; l < end; l += kLanes) {
    if (l + kLanes > end) {
      if (!overlap) break;
      l = end - kLanes;
    }
    mix_vector<H>(z, basis + l, f + l, regions, bases, size, stride);
  }
  if (overlap) return;
  for (l = begin + (end - begin) / kLanes * kLanes; l < end; ++l)
    for (int64_t r = 0; r < regions; ++r) {
      float acc = 0.0f;
      for (int64_t m = 0; m < bases; ++m) acc += z[r * bases + m] * basis[m * size + l];
      f[r * stride + l] = acc;
    }
}

// A window of whole vectors of every IHWO row, for one worker's output channels: row i of
// region r's filter gets basis columns [first, first + 16 * vectors) of row i mixed, stored
// at f + r * stride + i * 16 * vectors. The window must lie within the row (columns).
template <int H>
[[gnu::always_inline]] inline void mix_window_impl(const float* z, const float* basis, float* f, int64_t regions,
                                                   int64_t bases, int64_t size, int64_t stride, int64_t rows,
                                                   int64_t columns, int64_t first, int64_t vectors) {
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t v = 0; v < vectors; ++v)
      mix_vector<H>(z, basis + i * columns + first + v * kLanes, f + (i * vectors + v) * kLanes, regions, bases,
                    size, stride);
}

// means[c] = the mean of x[c * count, (c + 1) * count): each input channel's mean over the
// map. Two vector sums per channel (one would wait on itself).
[[gnu::always_inline]] inline void channel_means(const float* x, int64_t channels, int64_t count, float* means) {
  const float scale = 1.0f / static_cast<float>(count);
  for (int64_t c = 0; c < channels; ++c) {
    const float* row = x + c * count;
    Vec a = {}, b = {};
    int64_t i = 0;
    for (; i + 2 * kLanes <= count; i += 2 * kLanes) {
      a += *reinterpret_cast<const Vec*>(row + i);
      b += *reinterpret_cast<const Vec*>(row + i + kLanes);
    }
    if (i + kLanes <= count) {
      a += *reinterpret_cast<const Vec*>(row + i);
      i += kLanes;
    }
    a += b;
    // The 16 lanes summed in four halvings (lane by lane cost more than the loads at 7x7).
    a += __builtin_shufflevector(a, a, 8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7);
    a += __builtin_shufflevector(a, a, 4, 5, 6, 7, 0, 1, 2, 3, 12, 13, 14, 15, 8, 9, 10, 11);
    a += __builtin_shufflevector(a, a, 2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13);
    a += __builtin_shufflevector(a, a, 1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14);
    float sum = a[0];
    for (; i < count; ++i) sum += row[i];
    means[c] = sum * scale;
  }
}

// channel_means of x in ONNX Runtime's NCHWc layout, blocks of `block` channels.
[[gnu::always_inline]] inline void channel_means_blocked(const float* x, int64_t channels, int64_t count,
                                                         int64_t block, float* means) {
  const float scale = 1.0f / static_cast<float>(count);
  for (int64_t c0 = 0; c0 < channels; c0 += block, x += block * count) {
    float sum[kLanes] = {};
    if (block == kLanes) {  // a pixel's block is one vector: two sums (one would wait on itself)
      Vec a = {}, b = {};
      int64_t i = 0;
      for (; i + 2 <= count; i += 2) {
        a += *reinterpret_cast<const Vec*>(x + i * kLanes);
        b += *reinterpret_cast<const Vec*>(x + (i + 1) * kLanes);
      }
      if (i < count) a += *reinterpret_cast<const Vec*>(x + i * kLanes);
      a += b;
      std::memcpy(sum, &a, sizeof(Vec));
    } else {
      for (int64_t i = 0; i < count; ++i)
        for (int64_t l = 0; l < block; ++l) sum[l] += x[i * block + l];
    }
    for (int64_t l = 0; l < std::min(block, channels - c0); ++l) means[c0 + l] = sum[l] * scale;
  }
}

// A routed MixtureRegionConv2d's linear step (before the sigmoid), for one sample:
// out[l] = sum over c of means[c] * routing[c * width + l], with means the channel means of
// x [channels, count]. Four vectors of l at a time, two FMA chains each (even and odd c): one
// chain waited on itself, and the step cost more than the means.
// `block`: x's NCHWc block, 0 where x is NCHW.
[[gnu::always_inline]] inline void route_impl(const float* x, int64_t channels, int64_t count, int64_t block,
                                              const float* routing, int64_t width, float* means, float* out) {
  if (block > 0)
    channel_means_blocked(x, channels, count, block, means);
  else
    channel_means(x, channels, count, means);
  constexpr int64_t kHeld = 4;
  const int64_t whole = width / kLanes * kLanes;
  for (int64_t l0 = 0; l0 < whole; l0 += kHeld * kLanes) {
    const int64_t held = std::min<int64_t>(kHeld, (whole - l0) / kLanes);
    Vec even[kHeld] = {}, odd[kHeld] = {};
    int64_t c = 0;
    for (; c + 2 <= channels; c += 2) {
      const float* row = routing + c * width + l0;
#pragma GCC unroll 4
      for (int64_t k = 0; k < kHeld; ++k)
        if (k < held) {
          even[k] += means[c] * *reinterpret_cast<const Vec*>(row + k * kLanes);
          odd[k] += means[c + 1] * *reinterpret_cast<const Vec*>(row + width + k * kLanes);
        }
    }
    if (c < channels)
#pragma GCC unroll 4
      for (int64_t k = 0; k < kHeld; ++k)
        if (k < held) even[k] += means[c] * *reinterpret_cast<const Vec*>(routing + c * width + l0 + k * kLanes);
#pragma GCC unroll 4
    for (int64_t k = 0; k < kHeld; ++k)
      if (k < held) *reinterpret_cast<Vec*>(out + l0 + k * kLanes) = even[k] + odd[k];
  }
  for (int64_t l = whole; l < width; ++l) {
    float acc = 0.0f;
    for (int64_t c = 0; c < channels; ++c) acc += means[c] * routing[c * width + l];
    out[l] = acc;
  }
}

// The kernels of the float path, compiled once per instruction set.
struct Kernels {
  void (*convolve)(const Block&);          // x NCHW
  void (*convolve_blocked)(const Block&);  // x in NCHWc
  void (*pack_filter)(const float* f, int64_t c_out, int64_t c_in, int64_t taps, float* out);
  void (*pad_rows)(const float* x, int64_t c, int64_t h, int64_t w, int64_t pad_h, int64_t pad_w, float* out,
                   int64_t row_begin, int64_t row_end);
  void (*assign)(const float* guide, int64_t regions, int64_t pixels, int64_t begin, int64_t end, int32_t* region);
  void (*mix)(const float* z, const float* basis, float* f, int64_t regions, int64_t bases, int64_t size,
              int64_t stride, int64_t begin, int64_t end);
  void (*mix_window)(const float* z, const float* basis, float* f, int64_t regions, int64_t bases, int64_t size,
                     int64_t stride, int64_t rows, int64_t columns, int64_t first, int64_t vectors);
  void (*route)(const float* x, int64_t channels, int64_t count, int64_t block, const float* routing, int64_t width,
                float* means, float* out);
};

#define DRCONV_DIRECT_KERNELS(NAME, TARGET, P, MAX_NB)                                                         \
  TARGET inline void convolve_##NAME(const Block& s) { convolve_block<P, MAX_NB, false>(s); }                   \
  TARGET inline void convolve_blocked_##NAME(const Block& s) { convolve_block<P, MAX_NB, true>(s); }            \
  TARGET inline void pack_filter_##NAME(const float* f, int64_t c_out, int64_t c_in, int64_t taps, float* out) { \
    pack_filter_impl(f, c_out, c_in, taps, out);                                                                \
  }                                                                                                             \
  TARGET inline void pad_rows_##NAME(const float* x, int64_t c, int64_t h, int64_t w, int64_t pad_h,            \
                                     int64_t pad_w, float* out, int64_t row_begin, int64_t row_end) {           \
    pad_rows_impl(x, c, h, w, pad_h, pad_w, out, row_begin, row_end);                                           \
  }                                                                                                             \
  TARGET inline void mix_##NAME(const float* z, const float* basis, float* f, int64_t regions, int64_t bases,   \
                                int64_t size, int64_t stride, int64_t begin, int64_t end) {                     \
    mix_impl<2 * MAX_NB, (MAX_NB > 2 ? 2 : 1)>(z, basis, f, regions, bases, size, stride, begin, end);         \
  }                                                                                                             \
  TARGET inline void mix_window_##NAME(const float* z, const float* basis, float* f, int64_t regions,           \
                                       int64_t bases, int64_t size, int64_t stride, int64_t rows,               \
                                       int64_t columns, int64_t first, int64_t vectors) {                       \
    mix_window_impl<2 * MAX_NB>(z, basis, f, regions, bases, size, stride, rows, columns, first, vectors);       \
  }                                                                                                             \
  TARGET inline void route_##NAME(const float* x, int64_t channels, int64_t count, int64_t block,              \
                                  const float* routing, int64_t width, float* means, float* out) {              \
    route_impl(x, channels, count, block, routing, width, means, out);                                          \
  }

#if defined(__x86_64__) && defined(__GNUC__)
// 32 vector registers: 6 x 4 accumulators + 4 weights + 1 broadcast.
DRCONV_DIRECT_KERNELS(avx512, __attribute__((target("avx512f,fma"))), 6, 4)
// 16 registers of 8 floats, two per vector: 3 x 2 accumulators + 2 weights.
DRCONV_DIRECT_KERNELS(avx2, __attribute__((target("avx2,fma"))), 3, 2)
#endif
DRCONV_DIRECT_KERNELS(baseline, , 2, 1)
#undef DRCONV_DIRECT_KERNELS

// The instruction sets the kernels are compiled for, fastest first.
enum class Isa { kAvx512, kAvx2, kBaseline };

inline bool supported(Isa isa) {
#if defined(__x86_64__) && defined(__GNUC__)
  __builtin_cpu_init();
  if (isa == Isa::kAvx512) return __builtin_cpu_supports("avx512f");
  if (isa == Isa::kAvx2) return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif
  return isa == Isa::kBaseline;
}

// One variant; `isa` must be supported().
inline Kernels kernels_for(Isa isa) {
#if defined(__x86_64__) && defined(__GNUC__)
  if (isa == Isa::kAvx512)
    return {convolve_avx512, convolve_blocked_avx512, pack_filter_avx512, pad_rows_avx512, assign_avx512,
            mix_avx512,      mix_window_avx512,       route_avx512};
  if (isa == Isa::kAvx2)
    return {convolve_avx2, convolve_blocked_avx2, pack_filter_avx2, pad_rows_avx2, assign_regions<float>,
            mix_avx2,      mix_window_avx2,       route_avx2};
#endif
  (void)isa;
  return {convolve_baseline, convolve_blocked_baseline, pack_filter_baseline, pad_rows_baseline,
          assign_regions<float>, mix_baseline, mix_window_baseline, route_baseline};
}

// The fastest instruction set this CPU runs, and its kernels.
inline Isa best_isa() {
  for (const Isa isa : {Isa::kAvx512, Isa::kAvx2})
    if (supported(isa)) return isa;
  return Isa::kBaseline;
}

inline Kernels kernels() { return kernels_for(best_isa()); }

}  // namespace direct
}  // namespace drconv
