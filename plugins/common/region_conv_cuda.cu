// Region-wise convolution on CUDA at about the cost of one dense conv.
//
// Implicit GEMM over tiles of 64 output pixels x 64 output channels. A tile first finds
// the region of each of its pixels (once, from the guide), then runs the K loop
// (C_in * kh * kw, staged through shared memory 16 at a time) once per region present in
// the tile, with the patch values of pixels from other regions zeroed. Regions are
// spatially coherent, so a tile of consecutive pixels holds one region, rarely two: the
// multiply-adds stay close to one dense conv instead of R of them.
#include <cuda_fp16.h>

#include <cmath>
#include <cstdint>

#include "region_conv_cuda.h"

namespace drconv {
namespace {

constexpr int kTileP = 64;   // output pixels per block
constexpr int kTileC = 64;   // output channels per block
constexpr int kTileK = 16;   // reduction slice staged in shared memory
constexpr int kThreads = 256;  // 16 x 16 threads, 4 x 4 outputs each

struct Params {
  int64_t n, c_in, h, w, regions, c_out, kh, kw, sh, sw, ph, pw, dh, dw, h_out, w_out;
};

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
template <typename T>
__device__ __forceinline__ T from_float(float v);
template <>
__device__ __forceinline__ float from_float<float>(float v) { return v; }
template <>
__device__ __forceinline__ __half from_float<__half>(float v) { return __float2half_rn(v); }

// The contract's argmax: first maximum, NaN counts as the maximum (first NaN wins).
template <typename T>
__device__ int region_of(const T* guide, int64_t regions, int64_t step) {
  float best = to_float(guide[0]);
  if (isnan(best)) return 0;
  int index = 0;
  for (int64_t r = 1; r < regions; ++r) {
    const float v = to_float(guide[r * step]);
    if (isnan(v)) return static_cast<int>(r);
    if (v > best) {
      best = v;
      index = static_cast<int>(r);
    }
  }
  return index;
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    region_conv_kernel(const T* __restrict__ x, const T* __restrict__ filters, const T* __restrict__ guide,
                       T* __restrict__ y, Params p) {
  __shared__ float patch[kTileK][kTileP];
  __shared__ float weight[kTileK][kTileC + 1];
  __shared__ int region[kTileP];

  const int64_t pixels = p.h_out * p.w_out;
  const int64_t patch_size = p.c_in * p.kh * p.kw;
  const int64_t sample = blockIdx.z;
  const int64_t pixel0 = static_cast<int64_t>(blockIdx.x) * kTileP;
  const int64_t channel0 = static_cast<int64_t>(blockIdx.y) * kTileC;
  const int tid = threadIdx.x;
  const int tx = tid % 16, ty = tid / 16;  // tx: pixel group, ty: channel group

  const T* x_n = x + sample * p.c_in * p.h * p.w;
  if (tid < kTileP) {
    const int64_t pixel = pixel0 + tid;
    region[tid] = pixel < pixels ? region_of(guide + sample * p.regions * pixels + pixel, p.regions, pixels) : -1;
  }
  __syncthreads();

  float acc[4][4] = {};
  for (int64_t r = 0; r < p.regions; ++r) {
    const bool present = __syncthreads_or(tid < kTileP && region[tid] == r);
    if (!present) continue;
    const T* w_r = filters + (sample * p.regions + r) * p.c_out * patch_size;
    for (int64_t k0 = 0; k0 < patch_size; k0 += kTileK) {
      // Stage the patch slice: 16 x 64 values, 4 per thread, zero outside this region.
      for (int i = tid; i < kTileK * kTileP; i += kThreads) {
        const int kk = i / kTileP, pp = i % kTileP;
        const int64_t k = k0 + kk, pixel = pixel0 + pp;
        float v = 0.f;
        if (k < patch_size && region[pp] == r) {
          const int64_t c = k / (p.kh * p.kw), tap = k % (p.kh * p.kw);
          const int64_t oh = pixel / p.w_out, ow = pixel % p.w_out;
          const int64_t ih = oh * p.sh - p.ph + (tap / p.kw) * p.dh;
          const int64_t iw = ow * p.sw - p.pw + (tap % p.kw) * p.dw;
          if (ih >= 0 && ih < p.h && iw >= 0 && iw < p.w) v = to_float(x_n[(c * p.h + ih) * p.w + iw]);
        }
        patch[kk][pp] = v;
      }
      // Stage the filter slice: 16 x 64, read along k (contiguous in memory).
      for (int i = tid; i < kTileK * kTileC; i += kThreads) {
        const int cc = i / kTileK, kk = i % kTileK;
        const int64_t k = k0 + kk, channel = channel0 + cc;
        weight[kk][cc] = (k < patch_size && channel < p.c_out) ? to_float(w_r[channel * patch_size + k]) : 0.f;
      }
      __syncthreads();
#pragma unroll
      for (int kk = 0; kk < kTileK; ++kk) {
        float a[4], b[4];
#pragma unroll
        for (int i = 0; i < 4; ++i) a[i] = patch[kk][tx + 16 * i];
#pragma unroll
        for (int j = 0; j < 4; ++j) b[j] = weight[kk][ty + 16 * j];
#pragma unroll
        for (int i = 0; i < 4; ++i)
#pragma unroll
          for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
      }
      __syncthreads();
    }
  }

  T* y_n = y + sample * p.c_out * pixels;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int64_t pixel = pixel0 + tx + 16 * i;
    if (pixel >= pixels) continue;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int64_t channel = channel0 + ty + 16 * j;
      if (channel < p.c_out) y_n[channel * pixels + pixel] = from_float<T>(acc[i][j]);
    }
  }
}

}  // namespace

template <typename T>
cudaError_t region_conv_cuda_forward(const T* x, const T* filters, const T* guide, T* y, const RegionConvShape& s,
                                     cudaStream_t stream) {
  if (s.n == 0 || s.c_out == 0) return cudaSuccess;
  const Params p{s.n,       s.c_in,    s.h,      s.w,      s.regions, s.c_out,  s.kh,      s.kw,
                 s.stride_h, s.stride_w, s.pad_h, s.pad_w, s.dil_h,   s.dil_w,  s.h_out(), s.w_out()};
  const int64_t pixel_tiles = (s.pixels() + kTileP - 1) / kTileP;
  const int64_t channel_tiles = (s.c_out + kTileC - 1) / kTileC;
  if (pixel_tiles > INT32_MAX || channel_tiles > 65535 || s.n > 65535) return cudaErrorInvalidConfiguration;
  const dim3 grid(static_cast<unsigned>(pixel_tiles), static_cast<unsigned>(channel_tiles),
                  static_cast<unsigned>(s.n));
  region_conv_kernel<T><<<grid, kThreads, 0, stream>>>(x, filters, guide, y, p);
  return cudaGetLastError();
}

template cudaError_t region_conv_cuda_forward<float>(const float*, const float*, const float*, float*,
                                                     const RegionConvShape&, cudaStream_t);
template cudaError_t region_conv_cuda_forward<__half>(const __half*, const __half*, const __half*, __half*,
                                                      const RegionConvShape&, cudaStream_t);

}  // namespace drconv
