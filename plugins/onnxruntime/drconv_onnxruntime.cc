// libdrconv_onnxruntime: the drconv::RegionConv2d and drconv::MixtureRegionConv2d ops for
// ONNX Runtime >= 1.21.
// The one entry point is RegisterCustomOps (SessionOptions.register_custom_ops_library);
// the library does not link libonnxruntime and exports nothing else.
#include <onnxruntime_c_api.h>

#include <vector>

#include "region_conv2d_op.h"

namespace {

using drconv::ort::Provider;
using drconv::ort::RegionConv2dOp;

struct Registry {
  RegionConv2dOp cpu_float, cpu_mixture;
#ifdef DRCONV_WITH_CUDA
  RegionConv2dOp cuda_float, cuda_half;
#endif
  OrtCustomOpDomain* domain = nullptr;
  OrtStatus* status = nullptr;

  explicit Registry(const OrtApi* api)
      : cpu_float(api, Provider::kCpu, ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT),
        cpu_mixture(api, Provider::kCpu, ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT, /*mixture=*/true)
#ifdef DRCONV_WITH_CUDA
        ,
        cuda_float(api, Provider::kCuda, ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT),
        cuda_half(api, Provider::kCuda, ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16)
#endif
  {
    status = api->CreateCustomOpDomain(drconv::contract::kDomain, &domain);
    for (OrtCustomOp* op : ops())
      if (status == nullptr) status = api->CustomOpDomain_Add(domain, op);
  }

  std::vector<OrtCustomOp*> ops() {
#ifdef DRCONV_WITH_CUDA
    return {&cpu_float, &cpu_mixture, &cuda_float, &cuda_half};
#else
    return {&cpu_float, &cpu_mixture};
#endif
  }
};

}  // namespace

extern "C" __attribute__((visibility("default"))) OrtStatus* ORT_API_CALL
RegisterCustomOps(OrtSessionOptions* options, const OrtApiBase* api_base) {
  const OrtApi* api = api_base->GetApi(drconv::ort::kApiVersion);
  if (api == nullptr) {  // version 1 of the API is in every release and can still report why
    const OrtApi* oldest = api_base->GetApi(1);
    return oldest->CreateStatus(ORT_FAIL, "libdrconv_onnxruntime needs ONNX Runtime >= 1.21 (C API version 21)");
  }
  // The domain must outlive every session that uses it, and ONNX Runtime never hands it
  // back, so it is built once per process and never changed afterwards.
  static Registry registry(api);
  if (registry.status != nullptr)
    return api->CreateStatus(api->GetErrorCode(registry.status), api->GetErrorMessage(registry.status));
  return api->AddCustomOpDomain(options, registry.domain);
}
