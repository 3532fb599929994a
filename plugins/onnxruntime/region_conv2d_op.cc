#include "region_conv2d_op.h"

#include <algorithm>
#include <exception>
#include <new>
#include <string>
#include <thread>

namespace drconv::ort {
namespace {

const RegionConv2dOp& self(const OrtCustomOp* op) { return *static_cast<const RegionConv2dOp*>(op); }

constexpr size_t kMaxInputs = contract::kMixtureInputs;
const contract::NodeType& node_type(bool mixture) { return mixture ? contract::kMixture : contract::kRegionConv; }
size_t input_count(bool mixture) { return node_type(mixture).inputs; }
bool required_input(bool mixture, size_t i) { return node_type(mixture).required[i]; }

OrtStatus* error(const OrtApi& api, const std::string& message) {
  return api.CreateStatus(ORT_INVALID_ARGUMENT, message.c_str());
}

OrtStatus* create_kernel(const OrtCustomOp* op, const OrtApi* api, const OrtKernelInfo* info, void** kernel) {
  auto owned = new (std::nothrow) RegionConv2dKernel{api, self(op).provider, self(op).mixture, {}, nullptr};
  if (owned == nullptr) return api->CreateStatus(ORT_FAIL, "RegionConv2d: out of memory");
  OrtStatus* status = ints_attribute(*api, info, contract::kStrides, owned->attrs.strides);
  if (status == nullptr) status = ints_attribute(*api, info, contract::kPads, owned->attrs.pads);
  if (status == nullptr) status = ints_attribute(*api, info, contract::kDilations, owned->attrs.dilations);
  if (status == nullptr)
    status = string_attribute(*api, info, contract::kFilterLayout, owned->attrs.filter_layout);
  if (status == nullptr) status = string_attribute(*api, info, contract::kActivation, owned->attrs.activation);
  if (status == nullptr) status = int_attribute(*api, info, contract::kXChannelBlock, owned->attrs.x_channel_block);
  if (status == nullptr) status = int_attribute(*api, info, contract::kYChannelBlock, owned->attrs.y_channel_block);
  if (status == nullptr && self(op).provider == Provider::kCuda &&
      (owned->attrs.x_channel_block > 0 || owned->attrs.y_channel_block > 0))
    status = error(*api, "RegionConv2d: the blocked layout (x_channel_block, y_channel_block) is the CPU kernel's");
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

RegionConv2dOp::RegionConv2dOp(const OrtApi* api_table, Provider where, ONNXTensorElementDataType element_type,
                               bool mixed)
    : OrtCustomOp{}, api(api_table), provider(where), type(element_type), mixture(mixed) {
  version = kApiVersion;
  GetName = [](const OrtCustomOp* op) { return node_type(self(op).mixture).name; };
  GetExecutionProviderType = [](const OrtCustomOp* op) -> const char* {
    return self(op).provider == Provider::kCuda ? "CUDAExecutionProvider" : "CPUExecutionProvider";
  };
  GetInputType = [](const OrtCustomOp* op, size_t) { return self(op).type; };
  // The contract's inputs (region_conv_contract.h), the optional ones as such.
  GetInputTypeCount = [](const OrtCustomOp* op) -> size_t { return input_count(self(op).mixture); };
  GetOutputType = [](const OrtCustomOp* op, size_t) { return self(op).type; };
  GetOutputTypeCount = [](const OrtCustomOp*) -> size_t { return 1; };
  GetInputCharacteristic = [](const OrtCustomOp* op, size_t i) {
    return required_input(self(op).mixture, i) ? INPUT_OUTPUT_REQUIRED : INPUT_OUTPUT_OPTIONAL;
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
  InferOutputShapeFn = infer_output_shape;
  // ONNX Runtime matches these against the schema's since-version only: a model importing the
  // domain at a version past kLatestVersion still reaches the kernel, which cannot see that
  // version, so drconv's loaders refuse it (drconv.contract.check_versions).
  GetStartVersion = [](const OrtCustomOp* op) { return static_cast<int>(node_type(self(op).mixture).since); };
  GetEndVersion = [](const OrtCustomOp*) { return static_cast<int>(contract::kLatestVersion); };
}

OrtStatus* RegionConv2dKernel::compute(OrtKernelContext* context) const {
  const contract::NodeType& node = node_type(mixture);
  const char* const* names = node.names;
  const char* op = node.name;
  const size_t required = node.min_inputs(), most = node.inputs;
  size_t count = 0;
  DRCONV_ORT_RETURN_IF_ERROR(api->KernelContext_GetInputCount(context, &count));
  if (count < required || count > most)
    return error(*api, std::string(op) + ": expects " + std::to_string(required) + " to " + std::to_string(most) +
                           " inputs, got " + std::to_string(count));
  const OrtValue* given[kMaxInputs] = {};
  TensorInfo given_infos[kMaxInputs];
  for (size_t i = 0; i < count; ++i) {
    DRCONV_ORT_RETURN_IF_ERROR(api->KernelContext_GetInput(context, i, &given[i]));
    if (given[i] == nullptr) {
      if (!required_input(mixture, i)) continue;
      return error(*api, std::string(op) + ": input " + names[i] + " is missing");
    }
    DRCONV_ORT_RETURN_IF_ERROR(tensor_info(*api, given[i], given_infos[i]));
  }
  for (size_t i = 1; i < count; ++i)
    if (given[i] != nullptr && given_infos[i].type != given_infos[0].type)
      return error(*api, std::string(op) + ": input " + names[i] + " is " + type_name(given_infos[i].type) +
                             " but X is " + type_name(given_infos[0].type) + "; all inputs must share one type");
  if (mixture) {
    const std::string bad = contract::mixture_inputs_error(given[contract::kCoefficients] != nullptr,
                                                           given[contract::kRouting] != nullptr,
                                                           given[contract::kRoutingBias] != nullptr);
    if (!bad.empty()) return error(*api, bad);
  }
  // The region conv's inputs X, filters (or coefficients), guide, B; a mixture's basis aside.
  const size_t guide = mixture ? size_t{contract::kMixtureGuide} : size_t{contract::kGuide};
  const size_t bias = mixture ? size_t{contract::kMixtureBias} : size_t{contract::kBias};
  const size_t at[4] = {contract::kX, contract::kFilters, guide, bias};
  const OrtValue* inputs[4] = {};
  TensorInfo infos[4];
  for (size_t i = 0; i < 4; ++i) {
    inputs[i] = given[at[i]];
    infos[i] = given_infos[at[i]];
  }
  auto dims = [&](size_t i) {
    return given[i] != nullptr ? InputDims{given_infos[i].dims.data(), given_infos[i].dims.size()} : InputDims{};
  };
  RegionConvShape shape;
  const std::string bad = mixture ? mixture_shape(attrs, dims(0), dims(1), dims(2), dims(3), dims(4), dims(5),
                                                  dims(6), shape)
                                  : node_shape(attrs, dims(0), dims(1), dims(2), dims(3), shape);
  if (!bad.empty()) return error(*api, bad);
  const Basis basis{mixture ? given[contract::kBasis] : nullptr, mixture ? given_infos[contract::kBasis].dims[0] : 0,
                    given[contract::kRouting], given[contract::kRoutingBias]};
#ifdef DRCONV_WITH_CUDA
  if (provider == Provider::kCuda) return compute_cuda(context, inputs, infos, shape);
#endif
  return compute_cpu(context, inputs, infos, shape, basis);
}

}  // namespace drconv::ort
