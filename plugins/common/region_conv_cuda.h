// Region-wise convolution on CUDA, shared by the ONNX Runtime CUDA op and the TensorRT
// plugin. Host-callable launcher; the kernels are in region_conv_cuda.cu.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <string>

#include "region_conv_shape.h"

namespace drconv {

// The most regions the CUDA kernel takes: its per-block region tables live in shared memory.
constexpr int64_t kCudaMaxRegions = 4096;

// Empty when the CUDA kernel can run this (already validated) shape, else one line saying why:
// too many regions, or a sample too large for its 32-bit in-sample indexing.
std::string cuda_shape_error(const RegionConvShape& s);

// Bytes of device scratch region_conv_cuda_forward needs (the pixels bucketed by region:
// two [N, R] tables and two [N, P] lists of ints, each 256-byte aligned), from the batch,
// the region count and the output pixels per sample; TensorRT passes its profile's maxima.
inline size_t cuda_int_block(int64_t ints) { return (static_cast<size_t>(ints) * sizeof(int) + 255) / 256 * 256; }
inline size_t region_conv_cuda_workspace_size(int64_t n, int64_t regions, int64_t pixels) {
  return 2 * cuda_int_block(n * regions) + 2 * cuda_int_block(n * pixels);
}
inline size_t region_conv_cuda_workspace_size(const RegionConvShape& s) {
  return region_conv_cuda_workspace_size(s.n, s.regions, s.pixels());
}

// y[N, C_out, H_out, W_out] = the region-wise conv of x with the filter of each pixel's
// region (first argmax of guide over R; NaN counts as the maximum), enqueued on `stream`.
// T is float or __half (__half on tensor cores, accumulation in float). Inputs contiguous
// NCHW on the device; the shape must have passed validate() and cuda_shape_error();
// `workspace` holds region_conv_cuda_workspace_size(s) bytes, 256-byte aligned. Returns
// the launch status.
template <typename T>
cudaError_t region_conv_cuda_forward(const T* x, const T* filters, const T* guide, T* y, const RegionConvShape& s,
                                     void* workspace, cudaStream_t stream);

// Steps 1 and 2 of region_conv_cuda_forward alone, enqueued on `stream`: the workspace then
// holds, as ints, counts [N, R] (pixels per region), a scratch [N, R] table, the region of
// each pixel [N, P] and the pixels listed region by region [N, P] (each block 256-byte
// aligned; cuda_int_block gives the sizes). For timing the steps apart and for testing
// the bucketing itself.
template <typename T>
cudaError_t region_conv_cuda_bucket(const T* guide, const RegionConvShape& s, void* workspace, cudaStream_t stream);

}  // namespace drconv
