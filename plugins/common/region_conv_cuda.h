// Region-wise convolution on CUDA, shared by the ONNX Runtime CUDA op and the TensorRT
// plugin. Host-callable launcher; the kernels are in region_conv_cuda.cu.
#pragma once

#include <cuda_runtime_api.h>

#include "region_conv_shape.h"

namespace drconv {

// y[N, C_out, H_out, W_out] = the region-wise conv of x with the filter of each pixel's
// region (first argmax of guide over R; NaN counts as the maximum), enqueued on `stream`.
// T is float or __half (accumulation in float). Inputs contiguous NCHW on the device;
// the shape must have passed validate(). Needs no workspace. Returns the launch status.
template <typename T>
cudaError_t region_conv_cuda_forward(const T* x, const T* filters, const T* guide, T* y, const RegionConvShape& s,
                                     cudaStream_t stream);

}  // namespace drconv
