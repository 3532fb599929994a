// The CPU kernel: the shared float32 kernel (plugins/common/region_conv_cpu.h, the direct
// path of region_conv_cpu_direct.h) on ONNX Runtime's intra-op pool; for MixtureRegionConv2d
// the kernel mixes the filters from the basis into the workspace (Mixture).
#include <algorithm>
#include <cstdint>
#include <string>

#include "region_conv2d_op.h"
#include "region_conv_cpu.h"

namespace drconv::ort {
namespace {

// Runs fn(i) for i in [0, count) on ONNX Runtime's intra-op threads; serially if the
// pool refuses (the result is the same, only slower).
class OrtParallelFor {
 public:
  OrtParallelFor(const OrtApi& api, OrtKernelContext* context) : api_(api), context_(context) {}

  template <typename Fn>
  void operator()(int64_t count, const Fn& fn) const {
    if (count <= 0) return;
    auto trampoline = [](void* data, size_t i) { (*static_cast<const Fn*>(data))(static_cast<int64_t>(i)); };
    OrtStatus* status = api_.KernelContext_ParallelFor(context_, trampoline, static_cast<size_t>(count), 0,
                                                       const_cast<Fn*>(&fn));
    if (status == nullptr) return;
    api_.ReleaseStatus(status);
    for (int64_t i = 0; i < count; ++i) fn(i);
  }

 private:
  const OrtApi& api_;
  OrtKernelContext* context_;
};

}  // namespace

OrtStatus* RegionConv2dKernel::compute_cpu(OrtKernelContext* context, const OrtValue* const inputs[4],
                                           const TensorInfo infos[4], const RegionConvShape& shape,
                                           const Basis& basis) const {
  if (infos[0].type != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT)
    return api->CreateStatus(ORT_INVALID_ARGUMENT, (std::string("RegionConv2d: the CPU kernel runs float32, got ") +
                                                    type_name(infos[0].type) +
                                                    "; export the model in float32 or run it on CUDAExecutionProvider")
                                                       .c_str());
  const int64_t out_dims[4] = {shape.n, RegionConvShape::padded_channels(shape.c_out, shape.y_block), shape.h_out(),
                               shape.w_out()};
  OrtValue* output = nullptr;
  DRCONV_ORT_RETURN_IF_ERROR(api->KernelContext_GetOutput(context, 0, out_dims, 4, &output));
  void* data[4] = {};  // read only; API 21 has no const accessor (GetTensorData came in 1.22)
  for (int i = 0; i < 4; ++i)
    if (inputs[i] != nullptr)
      DRCONV_ORT_RETURN_IF_ERROR(api->GetTensorMutableData(const_cast<OrtValue*>(inputs[i]), &data[i]));
  void* y = nullptr;
  DRCONV_ORT_RETURN_IF_ERROR(api->GetTensorMutableData(output, &y));

  Scratch workspace(*api);
  const int64_t bytes = region_conv_workspace_size<float>(shape, workers, basis.count);
  DRCONV_ORT_RETURN_IF_ERROR(workspace.allocate(context, cpu_memory, bytes));
  Mixture mixing;
  if (basis.value != nullptr) {
    void* read[3] = {};  // basis, routing, routing_bias
    const OrtValue* values[3] = {basis.value, basis.routing, basis.routing_bias};
    for (int i = 0; i < 3; ++i)
      if (values[i] != nullptr)
        DRCONV_ORT_RETURN_IF_ERROR(api->GetTensorMutableData(const_cast<OrtValue*>(values[i]), &read[i]));
    mixing = {static_cast<const float*>(data[1]), static_cast<const float*>(read[0]), basis.count,
              static_cast<const float*>(read[1]), static_cast<const float*>(read[2])};
  }
  region_conv_forward_f32(static_cast<const float*>(data[0]), static_cast<const float*>(data[1]),
                          static_cast<const float*>(data[2]), static_cast<float*>(y), shape,
                          OrtParallelFor(*api, context), workers, workspace.aligned(),
                          direct::Epilogue{static_cast<const float*>(data[3]), attrs.activation == "Relu"},
                          basis.value != nullptr ? &mixing : nullptr);
  return nullptr;
}

}  // namespace drconv::ort
