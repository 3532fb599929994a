#include "region_conv2d_op.h"

#include <algorithm>
#include <exception>
#include <new>
#include <string>
#include <thread>

namespace drconv::ort {
namespace {

const RegionConv2dOp& self(const OrtCustomOp* op) { return *static_cast<const RegionConv2dOp*>(op); }

OrtStatus* error(const OrtApi& api, const std::string& message) {
  return api.CreateStatus(ORT_INVALID_ARGUMENT, message.c_str());
}

OrtStatus* create_kernel(const OrtCustomOp* op, const OrtApi* api, const OrtKernelInfo* info, void** kernel) {
  auto owned = new (std::nothrow) RegionConv2dKernel{api, self(op).provider, {}, nullptr};
  if (owned == nullptr) return api->CreateStatus(ORT_FAIL, "RegionConv2d: out of memory");
  OrtStatus* status = ints_attribute(*api, info, "strides", owned->attrs.strides);
  if (status == nullptr) status = ints_attribute(*api, info, "pads", owned->attrs.pads);
  if (status == nullptr) status = ints_attribute(*api, info, "dilations", owned->attrs.dilations);
  if (status == nullptr) status = string_attribute(*api, info, "filter_layout", owned->attrs.filter_layout);
  if (status == nullptr) status = string_attribute(*api, info, "activation", owned->attrs.activation);
  if (status == nullptr) {
    const std::string bad = owned->attrs.validate();
    if (!bad.empty()) status = error(*api, "RegionConv2d: " + bad);
  }
  owned->workers = std::clamp<int64_t>(std::thread::hardware_concurrency(), 1, 64);
  if (status == nullptr) status = api->CreateCpuMemoryInfo(OrtArenaAllocator, OrtMemTypeDefault, &owned->cpu_memory);
  if (status != nullptr) {
    if (owned->cpu_memory != nullptr) api->ReleaseMemoryInfo(owned->cpu_memory);
    delete owned;
    return status;
  }
  *kernel = owned;
  return nullptr;
}

OrtStatus* compute(void* kernel, OrtKernelContext* context) {
  const auto* k = static_cast<const RegionConv2dKernel*>(kernel);
  try {  // nothing may unwind into ONNX Runtime
    return k->compute(context);
  } catch (const std::bad_alloc&) {
    return k->api->CreateStatus(ORT_FAIL, "RegionConv2d: out of memory");
  } catch (const std::exception& exc) {
    return k->api->CreateStatus(ORT_FAIL, (std::string("RegionConv2d: ") + exc.what()).c_str());
  }
}

void destroy_kernel(void* kernel) {
  auto* k = static_cast<RegionConv2dKernel*>(kernel);
  if (k->cpu_memory != nullptr) k->api->ReleaseMemoryInfo(k->cpu_memory);
  delete k;
}

}  // namespace

RegionConv2dOp::RegionConv2dOp(const OrtApi* api_table, Provider where, ONNXTensorElementDataType element_type)
    : OrtCustomOp{}, api(api_table), provider(where), type(element_type) {
  version = kApiVersion;
  GetName = [](const OrtCustomOp*) { return "RegionConv2d"; };
  GetExecutionProviderType = [](const OrtCustomOp* op) -> const char* {
    return self(op).provider == Provider::kCuda ? "CUDAExecutionProvider" : "CPUExecutionProvider";
  };
  GetInputType = [](const OrtCustomOp* op, size_t) { return self(op).type; };
  GetInputTypeCount = [](const OrtCustomOp*) -> size_t { return 4; };  // X, filters, guide, optional B
  GetOutputType = [](const OrtCustomOp* op, size_t) { return self(op).type; };
  GetOutputTypeCount = [](const OrtCustomOp*) -> size_t { return 1; };
  GetInputCharacteristic = [](const OrtCustomOp*, size_t i) {
    return i < 3 ? INPUT_OUTPUT_REQUIRED : INPUT_OUTPUT_OPTIONAL;
  };
  GetOutputCharacteristic = [](const OrtCustomOp*, size_t) { return INPUT_OUTPUT_REQUIRED; };
  GetInputMemoryType = [](const OrtCustomOp*, size_t) { return OrtMemTypeDefault; };
  GetVariadicInputMinArity = [](const OrtCustomOp*) { return 1; };
  GetVariadicInputHomogeneity = [](const OrtCustomOp*) { return 1; };
  GetVariadicOutputMinArity = [](const OrtCustomOp*) { return 1; };
  GetVariadicOutputHomogeneity = [](const OrtCustomOp*) { return 1; };
  CreateKernelV2 = create_kernel;
  KernelComputeV2 = compute;
  KernelDestroy = destroy_kernel;
  GetStartVersion = [](const OrtCustomOp*) { return 1; };
  GetEndVersion = [](const OrtCustomOp*) { return 2; };  // 2 added filter_layout
}

OrtStatus* RegionConv2dKernel::compute(OrtKernelContext* context) const {
  static const char* const kNames[4] = {"X", "filters", "guide", "B"};
  size_t count = 0;
  DRCONV_ORT_RETURN_IF_ERROR(api->KernelContext_GetInputCount(context, &count));
  if (count != 3 && count != 4)
    return error(*api, "RegionConv2d: expects 3 or 4 inputs (X, filters, guide[, B]), got " + std::to_string(count));
  const OrtValue* inputs[4] = {};
  TensorInfo infos[4];
  for (size_t i = 0; i < count; ++i) {
    DRCONV_ORT_RETURN_IF_ERROR(api->KernelContext_GetInput(context, i, &inputs[i]));
    if (inputs[i] == nullptr) {
      if (i == 3) break;  // B is optional
      return error(*api, std::string("RegionConv2d: input ") + kNames[i] + " is missing");
    }
    DRCONV_ORT_RETURN_IF_ERROR(tensor_info(*api, inputs[i], infos[i]));
  }
  for (size_t i = 1; i < 4; ++i)
    if (inputs[i] != nullptr && infos[i].type != infos[0].type)
      return error(*api, std::string("RegionConv2d: input ") + kNames[i] + " is " + type_name(infos[i].type) +
                             " but X is " + type_name(infos[0].type) + "; all inputs must share one type");
  RegionConvShape shape;
  const std::string bad = make_shape(attrs, infos[0].dims.data(), infos[0].dims.size(), infos[1].dims.data(),
                                     infos[1].dims.size(), infos[2].dims.data(), infos[2].dims.size(), shape);
  if (!bad.empty()) return error(*api, bad);
  if (inputs[3] != nullptr) {
    const std::string bad_bias = check_bias(infos[3].dims.data(), infos[3].dims.size(), shape.c_out);
    if (!bad_bias.empty()) return error(*api, bad_bias);
  }
#ifdef DRCONV_WITH_CUDA
  if (provider == Provider::kCuda) return compute_cuda(context, inputs, infos, shape);
#endif
  return compute_cpu(context, inputs, infos, shape);
}

}  // namespace drconv::ort
