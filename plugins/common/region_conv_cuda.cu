// Region-wise convolution on CUDA at the cost of one dense conv, whatever the regions' shapes.
//
// Three launches on one stream, no host synchronisation:
//  1. assign: each pixel's region (first argmax of the guide), counted per (sample, region);
//  2. bucket: each sample's pixels listed region by region (a warp's pixels of one region
//     stay together and in order, so tiles keep most of the input's locality);
//  3. gemm: implicit GEMM over tiles of 64 listed pixels x 64 output channels. A tile lies
//     inside one region and runs exactly one filter: the multiply-adds of one dense conv,
//     plus each region's partial last tile.
// Tiles of neighbouring pixels masked per region would instead cost one pass per region
// present in the tile; a trained (or smoothed-noise) guide puts 7 of 8 regions in a
// 64-pixel run, so that is nearly the R-filter cost this project exists to avoid.
// float32 runs on the FMA units (4x4 outputs a thread); float16 on tensor cores (WMMA,
// float accumulation).
#include <cuda_fp16.h>
#include <mma.h>

#include <climits>
#include <cstdint>

#include "region_conv_cuda.h"

namespace drconv {
namespace {

constexpr int kTileP = 64;            // listed pixels per tile
constexpr int kTileC = 64;            // output channels per tile
constexpr int kBucketThreads = 256;   // pixels per block in steps 1 and 2
constexpr int kF32Threads = 256;      // 16 x 16 threads, 4 x 4 outputs each
constexpr int kF32K = 16;             // reduction slice staged in shared memory (float32)
constexpr int kF16Threads = 128;      // 4 warps, 32 x 32 outputs each
constexpr int kF16K = 32;             // reduction slice (float16): two WMMA steps
constexpr int kNoRow = INT_MIN / 2;   // an input row no bounds check accepts
constexpr unsigned kFullMask = 0xffffffffu;

// Sizes as 32-bit ints: cuda_shape_error() guarantees every in-sample index fits.
struct Params {
  int n, c_in, h, w, regions, c_out, kh, kw, sh, sw, ph, pw, dh, dw, h_out, w_out, pixels, patch;
};

struct Buckets {
  int* counts;   // [N, R] pixels per region
  int* cursors;  // [N, R] slots taken so far in step 2
  int* region;   // [N, P] each pixel's region
  int* order;    // [N, P] pixel indices, region by region
};

Buckets carve(void* workspace, const RegionConvShape& s) {
  char* base = static_cast<char*>(workspace);
  const size_t table = cuda_int_block(s.n * s.regions), list = cuda_int_block(s.n * s.pixels());
  return {reinterpret_cast<int*>(base), reinterpret_cast<int*>(base + table),
          reinterpret_cast<int*>(base + 2 * table), reinterpret_cast<int*>(base + 2 * table + list)};
}

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
// Zero without __half's float constructor, which PyTorch's builds switch off
// (__CUDA_NO_HALF_CONVERSIONS__).
template <typename T>
__device__ __forceinline__ T zero();
template <>
__device__ __forceinline__ float zero<float>() { return 0.f; }
template <>
__device__ __forceinline__ __half zero<__half>() { return __float2half(0.f); }

// The contract's argmax: first maximum, NaN counts as the maximum (first NaN wins).
template <typename T>
__device__ int region_of(const T* guide, int regions, int step) {
  float best = to_float(guide[0]);
  if (isnan(best)) return 0;
  int index = 0;
  for (int r = 1; r < regions; ++r) {
    const float v = to_float(guide[static_cast<int64_t>(r) * step]);
    if (isnan(v)) return r;
    if (v > best) {
      best = v;
      index = r;
    }
  }
  return index;
}

__device__ __forceinline__ int warp_inclusive_sum(int v) {
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int d = 1; d < 32; d <<= 1) {
    const int u = __shfl_up_sync(kFullMask, v, d);
    if (lane >= d) v += u;
  }
  return v;
}

template <typename T>
__global__ void __launch_bounds__(kBucketThreads) assign_regions(const T* __restrict__ guide, Params p, Buckets b) {
  extern __shared__ int hist[];  // [R]: this block's pixels per region
  const int n = blockIdx.y;
  const int pixel = blockIdx.x * kBucketThreads + threadIdx.x;
  for (int r = threadIdx.x; r < p.regions; r += kBucketThreads) hist[r] = 0;
  __syncthreads();
  if (pixel < p.pixels) {
    const int r = region_of(guide + static_cast<int64_t>(n) * p.regions * p.pixels + pixel, p.regions, p.pixels);
    b.region[static_cast<int64_t>(n) * p.pixels + pixel] = r;
    atomicAdd(&hist[r], 1);
  }
  __syncthreads();
  for (int r = threadIdx.x; r < p.regions; r += kBucketThreads)
    if (hist[r] > 0) atomicAdd(&b.counts[n * p.regions + r], hist[r]);
}

__global__ void __launch_bounds__(kBucketThreads) bucket_pixels(Params p, Buckets b) {
  extern __shared__ int smem[];
  int* local = smem;              // [R]: this block's pixels per region
  int* start = smem + p.regions;  // [R]: where this block's run of each region starts in order[]
  const int n = blockIdx.y;
  const int pixel = blockIdx.x * kBucketThreads + threadIdx.x;
  const int lane = threadIdx.x & 31;
  for (int r = threadIdx.x; r < p.regions; r += kBucketThreads) local[r] = 0;
  __syncthreads();

  // A warp's pixels of one region take consecutive slots, in pixel order: one atomic each.
  const int r = pixel < p.pixels ? b.region[static_cast<int64_t>(n) * p.pixels + pixel] : -1;
  const unsigned peers = __match_any_sync(kFullMask, r);
  const int leader = __ffs(peers) - 1;
  int base = 0;
  if (r >= 0 && lane == leader) base = atomicAdd(&local[r], __popc(peers));
  const int rank = __shfl_sync(kFullMask, base, leader) + __popc(peers & ((1u << lane) - 1));

  if (threadIdx.x < 32) {  // start[r] = pixels of this sample in regions before r
    int before = 0;
    for (int r0 = 0; r0 < p.regions; r0 += 32) {
      const int q = r0 + lane;
      const int count = q < p.regions ? b.counts[n * p.regions + q] : 0;
      const int inclusive = warp_inclusive_sum(count);
      if (q < p.regions) start[q] = before + inclusive - count;
      before += __shfl_sync(kFullMask, inclusive, 31);
    }
  }
  __syncthreads();
  for (int q = threadIdx.x; q < p.regions; q += kBucketThreads)
    if (local[q] > 0) start[q] += atomicAdd(&b.cursors[n * p.regions + q], local[q]);
  __syncthreads();
  if (r >= 0) b.order[static_cast<int64_t>(n) * p.pixels + start[r] + rank] = pixel;
}

// What a GEMM block knows of its tile: the region and, per listed pixel, where its
// receptive field starts; and per reduction index k in the current slice, where the
// input value sits relative to that start (a small table, double-buffered, so that
// no thread divides by the kernel size in the inner loop).
template <int K>
struct TileState {
  int region, first, count;  // pixels order[first, first + count) of the sample, count <= kTileP
  int pixel[kTileP], ih0[kTileP], iw0[kTileP];
  int koff[2][K], kdy[2][K], kdx[2][K];
};

// Finds tile `t` of sample `n` (tiles numbered region by region); false when there is none.
// Called by every thread of the block.
template <int K>
__device__ bool locate_tile(const Params& p, const Buckets& b, int n, int t, TileState<K>& s) {
  if (threadIdx.x < 32) {
    const int lane = threadIdx.x;
    if (lane == 0) s.region = -1;
    int tiles_before = 0, pixels_before = 0;
    for (int r0 = 0; r0 < p.regions && tiles_before <= t; r0 += 32) {
      const int r = r0 + lane;
      const int count = r < p.regions ? b.counts[n * p.regions + r] : 0;
      const int tiles = (count + kTileP - 1) / kTileP;
      const int tiles_inclusive = warp_inclusive_sum(tiles), pixels_inclusive = warp_inclusive_sum(count);
      const int first_tile = tiles_before + tiles_inclusive - tiles;
      if (t >= first_tile && t < first_tile + tiles) {
        const int j = t - first_tile;
        s.region = r;
        s.first = pixels_before + pixels_inclusive - count + j * kTileP;
        s.count = min(kTileP, count - j * kTileP);
      }
      tiles_before += __shfl_sync(kFullMask, tiles_inclusive, 31);
      pixels_before += __shfl_sync(kFullMask, pixels_inclusive, 31);
    }
  }
  __syncthreads();
  return s.region >= 0;
}

template <int K>
__device__ void load_pixels(const Params& p, const Buckets& b, int n, TileState<K>& s) {
  const int i = threadIdx.x;
  if (i >= kTileP) return;
  const int pixel = i < s.count ? b.order[static_cast<int64_t>(n) * p.pixels + s.first + i] : -1;
  s.pixel[i] = pixel;
  s.ih0[i] = pixel < 0 ? kNoRow : (pixel / p.w_out) * p.sh - p.ph;
  s.iw0[i] = pixel < 0 ? 0 : (pixel % p.w_out) * p.sw - p.pw;
}

// Table entry for reduction index k = (channel, tap); past the end, a row no check accepts.
template <int K>
__device__ void decode_k(const Params& p, int k, int slot, int buf, TileState<K>& s) {
  if (k >= p.patch) {
    s.koff[buf][slot] = 0, s.kdy[buf][slot] = kNoRow, s.kdx[buf][slot] = 0;
    return;
  }
  const int taps = p.kh * p.kw;
  const int c = k / taps, tap = k - c * taps;
  const int ky = tap / p.kw, kx = tap - ky * p.kw;
  const int dy = ky * p.dh, dx = kx * p.dw;
  s.koff[buf][slot] = (c * p.h + dy) * p.w + dx;
  s.kdy[buf][slot] = dy, s.kdx[buf][slot] = dx;
}

// What a GEMM block reads once its tile is found: the sample's input, the region's
// filter, and where the receptive field of the pixel this thread stages starts.
template <typename T>
struct TileInputs {
  const T* x_n;
  const T* w_r;
  int ih0, iw0, pixel_base;
};

// Finds the block's tile (false: there is none), loads its pixels and the first slice's
// k table. Called by every thread of the block.
template <typename T, int K>
__device__ bool begin_tile(const T* x, const T* filters, const Params& p, const Buckets& b, TileState<K>& s,
                           TileInputs<T>& in) {
  const int n = blockIdx.y, tid = threadIdx.x;
  if (!locate_tile(p, b, n, blockIdx.x, s)) return false;
  load_pixels(p, b, n, s);
  if (tid < K) decode_k(p, tid, tid, 0, s);
  __syncthreads();
  in.x_n = x + static_cast<int64_t>(n) * p.c_in * p.h * p.w;
  in.w_r = filters + (static_cast<int64_t>(n) * p.regions + s.region) * p.c_out * p.patch;
  const int pp = tid % kTileP;
  in.ih0 = s.ih0[pp], in.iw0 = s.iw0[pp];
  in.pixel_base = s.pixel[pp] < 0 ? 0 : in.ih0 * p.w + in.iw0;
  return true;
}

// The input value of this thread's staged pixel at slice entry kk, zero in the padding.
template <typename T, int K>
__device__ __forceinline__ T patch_value(const TileInputs<T>& in, const Params& p, const TileState<K>& s, int buf,
                                         int kk) {
  const int ih = in.ih0 + s.kdy[buf][kk], iw = in.iw0 + s.kdx[buf][kk];
  const bool inside = static_cast<unsigned>(ih) < static_cast<unsigned>(p.h) &&
                      static_cast<unsigned>(iw) < static_cast<unsigned>(p.w);
  return inside ? in.x_n[s.koff[buf][kk] + in.pixel_base] : zero<T>();
}

// One thread's share of a slice, fetched from global memory into registers a slice
// ahead so that the loads overlap the previous slice's arithmetic. (Fetched and stored
// value by value instead, each store waited for its load: the block spent one L2 round
// trip per value staged, 6x cuDNN's device time on an H200.)
template <typename T, int K, int Threads>
struct Fetched {
  static_assert(Threads % kTileP == 0 && K * kTileP % Threads == 0 && K * kTileC % Threads == 0,
                "a slice must split evenly over the block");
  static constexpr int kA = K * kTileP / Threads;  // input values: rows kk = tid / kTileP + j * kARows
  static constexpr int kARows = Threads / kTileP;
  static constexpr int kW = K * kTileC / Threads;  // filter values: i = tid + j * Threads, (cc, kk) = (i / K, i % K)
  T a[kA], w[kW];

  // Every load of slice k0 issued before any is used: the table for k0 is `buf`.
  __device__ __forceinline__ void fetch(const TileInputs<T>& in, const Params& p, const TileState<K>& s, int buf,
                                        int k0, int c0) {
    const int tid = threadIdx.x;
#pragma unroll
    for (int j = 0; j < kA; ++j) a[j] = patch_value(in, p, s, buf, tid / kTileP + j * kARows);
#pragma unroll
    for (int j = 0; j < kW; ++j) {
      const int i = tid + j * Threads, cc = i / K, kk = i % K, k = k0 + kk, channel = c0 + cc;
      w[j] = k < p.patch && channel < p.c_out ? in.w_r[static_cast<int64_t>(channel) * p.patch + k] : zero<T>();
    }
  }

  // Into shared memory: the filter values as [k][channel], the input values as [k][pixel]
  // (float32's FMA tiles) or [pixel][k] (float16's WMMA tiles).
  template <bool kByK, int RowsA, int LdA, int LdB>
  __device__ __forceinline__ void store(T (&a_s)[RowsA][LdA], T (&b_s)[K][LdB]) const {
    const int tid = threadIdx.x, pp = tid % kTileP;
#pragma unroll
    for (int j = 0; j < kA; ++j) {
      const int kk = tid / kTileP + j * kARows;
      if constexpr (kByK) {
        a_s[kk][pp] = a[j];
      } else {
        a_s[pp][kk] = a[j];
      }
    }
#pragma unroll
    for (int j = 0; j < kW; ++j) {
      const int i = tid + j * Threads;
      b_s[i % K][i / K] = w[j];
    }
  }
};

__global__ void __launch_bounds__(kF32Threads)
    gemm_f32(const float* __restrict__ x, const float* __restrict__ filters, float* __restrict__ y, Params p,
             Buckets b) {
  __shared__ __align__(16) float a_s[kF32K][kTileP];
  __shared__ __align__(16) float b_s[kF32K][kTileC + 4];
  __shared__ TileState<kF32K> s;
  TileInputs<float> in;
  if (!begin_tile(x, filters, p, b, s, in)) return;
  const int n = blockIdx.y, c0 = blockIdx.z * kTileC, tid = threadIdx.x;
  const int tx = tid % 16, ty = tid / 16;  // outputs: pixels 4tx..4tx+3, channels 4ty..4ty+3
  float acc[4][4] = {};
  Fetched<float, kF32K, kF32Threads> next;
  next.fetch(in, p, s, 0, 0, c0);
  int buf = 0;
  for (int k0 = 0; k0 < p.patch; k0 += kF32K, buf ^= 1) {
    next.store<true>(a_s, b_s);
    if (tid < kF32K) decode_k(p, k0 + kF32K + tid, tid, buf ^ 1, s);
    __syncthreads();
    if (k0 + kF32K < p.patch) next.fetch(in, p, s, buf ^ 1, k0 + kF32K, c0);
#pragma unroll
    for (int kk = 0; kk < kF32K; ++kk) {
      const float4 a = *reinterpret_cast<const float4*>(&a_s[kk][4 * tx]);
      const float4 w = *reinterpret_cast<const float4*>(&b_s[kk][4 * ty]);
      const float av[4] = {a.x, a.y, a.z, a.w}, wv[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(av[i], wv[j], acc[i][j]);
    }
    __syncthreads();
  }

  float* y_n = y + static_cast<int64_t>(n) * p.c_out * p.pixels;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int pixel = s.pixel[4 * tx + i];
    if (pixel < 0) continue;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int channel = c0 + 4 * ty + j;
      if (channel < p.c_out) y_n[static_cast<int64_t>(channel) * p.pixels + pixel] = acc[i][j];
    }
  }
}

// At most 128 registers, so that 4 blocks share a multiprocessor (holding a fetched slice,
// it took 173 otherwise: 2 blocks to hide the loads' latency; ptxas spills 24 bytes).
__global__ void __launch_bounds__(kF16Threads, 4)
    gemm_f16(const __half* __restrict__ x, const __half* __restrict__ filters, __half* __restrict__ y, Params p,
             Buckets b) {
  namespace wmma = nvcuda::wmma;
  constexpr int kLdA = kF16K + 8, kLdB = kTileC + 8, kLdC = kTileP + 4;  // padded against bank conflicts
  __shared__ __align__(32) __half a_s[kTileP][kLdA];                      // pixel x k
  __shared__ __align__(32) __half b_s[kF16K][kLdB];                       // k x channel
  __shared__ __align__(32) float c_s[kTileC][kLdC];                       // channel x pixel
  __shared__ TileState<kF16K> s;
  TileInputs<__half> in;
  if (!begin_tile(x, filters, p, b, s, in)) return;
  const int n = blockIdx.y, c0 = blockIdx.z * kTileC, tid = threadIdx.x;
  const int warp = tid / 32, wm = warp % 2, wn = warp / 2;  // this warp's 32 pixels x 32 channels
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[2][2];
#pragma unroll
  for (int i = 0; i < 2; ++i)
#pragma unroll
    for (int j = 0; j < 2; ++j) wmma::fill_fragment(acc[i][j], 0.f);

  Fetched<__half, kF16K, kF16Threads> next;
  next.fetch(in, p, s, 0, 0, c0);
  int buf = 0;
  for (int k0 = 0; k0 < p.patch; k0 += kF16K, buf ^= 1) {
    next.store<false>(a_s, b_s);
    if (tid < kF16K) decode_k(p, k0 + kF16K + tid, tid, buf ^ 1, s);
    __syncthreads();
    if (k0 + kF16K < p.patch) next.fetch(in, p, s, buf ^ 1, k0 + kF16K, c0);
#pragma unroll
    for (int ks = 0; ks < kF16K; ks += 16) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::row_major> a[2];
      wmma::fragment<wmma::matrix_b, 16, 16, 16, __half, wmma::row_major> w[2];
#pragma unroll
      for (int i = 0; i < 2; ++i) wmma::load_matrix_sync(a[i], &a_s[32 * wm + 16 * i][ks], kLdA);
#pragma unroll
      for (int j = 0; j < 2; ++j) wmma::load_matrix_sync(w[j], &b_s[ks][32 * wn + 16 * j], kLdB);
#pragma unroll
      for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < 2; ++j) wmma::mma_sync(acc[i][j], a[i], w[j], acc[i][j]);
    }
    __syncthreads();
  }

#pragma unroll
  for (int i = 0; i < 2; ++i)
#pragma unroll
    for (int j = 0; j < 2; ++j)
      wmma::store_matrix_sync(&c_s[32 * wn + 16 * j][32 * wm + 16 * i], acc[i][j], kLdC, wmma::mem_col_major);
  __syncthreads();
  __half* y_n = y + static_cast<int64_t>(n) * p.c_out * p.pixels;
  for (int i = tid; i < kTileC * kTileP; i += kF16Threads) {
    const int cc = i / kTileP, q = i % kTileP, pixel = s.pixel[q], channel = c0 + cc;
    if (pixel >= 0 && channel < p.c_out)
      y_n[static_cast<int64_t>(channel) * p.pixels + pixel] = __float2half_rn(c_s[cc][q]);
  }
}

void launch_gemm(const float* x, const float* filters, float* y, const Params& p, const Buckets& b, dim3 grid,
                 cudaStream_t stream) {
  gemm_f32<<<grid, kF32Threads, 0, stream>>>(x, filters, y, p, b);
}

void launch_gemm(const __half* x, const __half* filters, __half* y, const Params& p, const Buckets& b, dim3 grid,
                 cudaStream_t stream) {
  gemm_f16<<<grid, kF16Threads, 0, stream>>>(x, filters, y, p, b);
}

}  // namespace

std::string cuda_shape_error(const RegionConvShape& s) {
  if (s.regions > kCudaMaxRegions)
    return "the CUDA kernel takes at most " + std::to_string(kCudaMaxRegions) + " regions, got R=" +
           std::to_string(s.regions);
  const int64_t limit = INT32_MAX;
  if (s.c_in * s.h * s.w > limit || s.c_out * s.patch() > limit || s.regions * s.pixels() > limit ||
      s.c_out * s.pixels() > limit || s.pixels() + kTileP * s.regions > limit)
    return "one sample is too large for the CUDA kernel (more than 2^31 values in x, filters, guide or y of one "
           "sample); split the input";
  if (s.n > 65535 || (s.c_out + kTileC - 1) / kTileC > 65535)
    return "the CUDA kernel takes at most 65535 samples and " + std::to_string(65535 * kTileC) +
           " output channels; split the batch";
  return {};
}

namespace {

Params params_of(const RegionConvShape& s) {
  auto i32 = [](int64_t v) { return static_cast<int>(v); };
  return {i32(s.n),       i32(s.c_in),     i32(s.h),        i32(s.w),     i32(s.regions),
          i32(s.c_out),   i32(s.kh),       i32(s.kw),       i32(s.stride_h), i32(s.stride_w),
          i32(s.pad_h),   i32(s.pad_w),    i32(s.dil_h),    i32(s.dil_w), i32(s.h_out()),
          i32(s.w_out()), i32(s.pixels()), i32(s.patch())};
}

// Steps 1 and 2: each pixel's region, then the pixels listed region by region.
template <typename T>
cudaError_t bucket(const T* guide, const Params& p, const Buckets& b, const RegionConvShape& s, cudaStream_t stream) {
  const size_t tables = 2 * cuda_int_block(s.n * s.regions);  // counts and cursors, adjacent
  const cudaError_t err = cudaMemsetAsync(b.counts, 0, tables, stream);
  if (err != cudaSuccess) return err;
  const dim3 grid(static_cast<unsigned>((p.pixels + kBucketThreads - 1) / kBucketThreads), static_cast<unsigned>(p.n));
  const size_t hist_bytes = static_cast<size_t>(p.regions) * sizeof(int);
  assign_regions<T><<<grid, kBucketThreads, hist_bytes, stream>>>(guide, p, b);
  bucket_pixels<<<grid, kBucketThreads, 2 * hist_bytes, stream>>>(p, b);
  return cudaGetLastError();
}

}  // namespace

template <typename T>
cudaError_t region_conv_cuda_bucket(const T* guide, const RegionConvShape& s, void* workspace, cudaStream_t stream) {
  if (s.n == 0) return cudaSuccess;
  if (!cuda_shape_error(s).empty()) return cudaErrorInvalidValue;
  return bucket(guide, params_of(s), carve(workspace, s), s, stream);
}

template <typename T>
cudaError_t region_conv_cuda_forward(const T* x, const T* filters, const T* guide, T* y, const RegionConvShape& s,
                                     void* workspace, cudaStream_t stream) {
  if (s.n == 0 || s.c_out == 0) return cudaSuccess;
  if (!cuda_shape_error(s).empty()) return cudaErrorInvalidValue;
  const Params p = params_of(s);
  const Buckets b = carve(workspace, s);
  const cudaError_t err = bucket(guide, p, b, s, stream);
  if (err != cudaSuccess) return err;
  // At most one partial tile per region: ceil(P / 64) + R tiles bound every sample's count.
  const dim3 gemm_grid(static_cast<unsigned>((p.pixels + kTileP - 1) / kTileP + p.regions),
                       static_cast<unsigned>(p.n), static_cast<unsigned>((p.c_out + kTileC - 1) / kTileC));
  launch_gemm(x, filters, y, p, b, gemm_grid, stream);
  return cudaGetLastError();
}

template cudaError_t region_conv_cuda_bucket<float>(const float*, const RegionConvShape&, void*, cudaStream_t);
template cudaError_t region_conv_cuda_bucket<__half>(const __half*, const RegionConvShape&, void*, cudaStream_t);
template cudaError_t region_conv_cuda_forward<float>(const float*, const float*, const float*, float*,
                                                     const RegionConvShape&, void*, cudaStream_t);
template cudaError_t region_conv_cuda_forward<__half>(const __half*, const __half*, const __half*, __half*,
                                                      const RegionConvShape&, void*, cudaStream_t);

}  // namespace drconv
