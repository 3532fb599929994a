// The CUDAExecutionProvider kernel: the shared CUDA kernel (plugins/common/region_conv_cuda.cu)
// on the stream ONNX Runtime gives the node. Built only when CMake finds the CUDA toolkit.
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <string>

#include "region_conv2d_op.h"
#include "region_conv_cuda.h"

namespace drconv::ort {

namespace {

// The memory info of the current CUDA device (ONNX Runtime has made the node's device
// current), to ask the session's CUDA allocator for scratch.
class CudaMemoryInfo {
 public:
  explicit CudaMemoryInfo(const OrtApi& api) : api_(api) {}
  CudaMemoryInfo(const CudaMemoryInfo&) = delete;
  CudaMemoryInfo& operator=(const CudaMemoryInfo&) = delete;
  ~CudaMemoryInfo() {
    if (info_ != nullptr) api_.ReleaseMemoryInfo(info_);
  }

  OrtStatus* create() {
    int device = 0;
    if (cudaGetDevice(&device) != cudaSuccess)
      return api_.CreateStatus(ORT_EP_FAIL, "RegionConv2d: no current CUDA device");
    return api_.CreateMemoryInfo("Cuda", OrtArenaAllocator, device, OrtMemTypeDefault, &info_);
  }

  const OrtMemoryInfo* get() const { return info_; }

 private:
  const OrtApi& api_;
  OrtMemoryInfo* info_ = nullptr;
};

}  // namespace

OrtStatus* RegionConv2dKernel::compute_cuda(OrtKernelContext* context, const OrtValue* const inputs[4],
                                            const TensorInfo infos[4], const RegionConvShape& shape) const {
  // The CUDA kernel is version 1 of the node: OIHW filters, no bias, no activation.
  if (shape.layout != FilterLayout::kOIHW || inputs[3] != nullptr || !attrs.activation.empty())
    return api->CreateStatus(ORT_INVALID_ARGUMENT,
                             "RegionConv2d: the CUDA kernel takes filter_layout OIHW without B or activation; open "
                             "the model with drconv.runtime.ort.session(..., providers=['CUDAExecutionProvider']), "
                             "which converts it, or export with --filter-layout OIHW --no-fuse");
  const std::string unsupported = cuda_shape_error(shape);
  if (!unsupported.empty()) return api->CreateStatus(ORT_INVALID_ARGUMENT, ("RegionConv2d: " + unsupported).c_str());
  const int64_t out_dims[4] = {shape.n, shape.c_out, shape.h_out(), shape.w_out()};
  OrtValue* output = nullptr;
  DRCONV_ORT_RETURN_IF_ERROR(api->KernelContext_GetOutput(context, 0, out_dims, 4, &output));
  void* data[3] = {};  // read only; API 21 has no const accessor; B is absent (checked above)
  for (int i = 0; i < 3; ++i)
    DRCONV_ORT_RETURN_IF_ERROR(api->GetTensorMutableData(const_cast<OrtValue*>(inputs[i]), &data[i]));
  void* y = nullptr;
  DRCONV_ORT_RETURN_IF_ERROR(api->GetTensorMutableData(output, &y));
  void* stream = nullptr;
  DRCONV_ORT_RETURN_IF_ERROR(api->KernelContext_GetGPUComputeStream(context, &stream));
  CudaMemoryInfo memory(*api);
  DRCONV_ORT_RETURN_IF_ERROR(memory.create());
  Scratch workspace(*api);
  DRCONV_ORT_RETURN_IF_ERROR(
      workspace.allocate(context, memory.get(), static_cast<int64_t>(region_conv_cuda_workspace_size(shape))));

  cudaError_t err = cudaSuccess;
  if (infos[0].type == ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16) {
    err = region_conv_cuda_forward<__half>(static_cast<const __half*>(data[0]), static_cast<const __half*>(data[1]),
                                           static_cast<const __half*>(data[2]), static_cast<__half*>(y), shape,
                                           workspace.aligned(), static_cast<cudaStream_t>(stream));
  } else {
    err = region_conv_cuda_forward<float>(static_cast<const float*>(data[0]), static_cast<const float*>(data[1]),
                                          static_cast<const float*>(data[2]), static_cast<float*>(y), shape,
                                          workspace.aligned(), static_cast<cudaStream_t>(stream));
  }
  if (err != cudaSuccess)
    return api->CreateStatus(ORT_EP_FAIL, (std::string("RegionConv2d: CUDA kernel launch failed: ") +
                                           cudaGetErrorString(err))
                                              .c_str());
  return nullptr;
}

}  // namespace drconv::ort
