// The drconv::RegionConv2d and drconv::MixtureRegionConv2d custom ops for ONNX Runtime: one
// OrtCustomOp per (op, execution provider, type), each creating kernels that hold the
// node's parsed attributes.
#pragma once

#include <onnxruntime_c_api.h>

#include "ort_api.h"
#include "region_conv_node.h"

namespace drconv::ort {

enum class Provider { kCpu, kCuda };

// An OrtCustomOp whose callbacks read `api`, `provider` and `type` from the op itself,
// so the library keeps no state outside the objects ONNX Runtime holds. One op per
// (provider, element type): ONNX Runtime merges ops of one name into one schema.
// `mixture`: the MixtureRegionConv2d node, whose filters are mixed from a basis (CPU only).
struct RegionConv2dOp : OrtCustomOp {
  RegionConv2dOp(const OrtApi* api, Provider provider, ONNXTensorElementDataType type, bool mixture = false);

  const OrtApi* api;
  Provider provider;
  ONNXTensorElementDataType type;
  bool mixture;
};

// Y's shape from the inputs' (region_conv2d_shape.cc): OrtCustomOp::InferOutputShapeFn.
OrtStatus* infer_output_shape(const OrtCustomOp* op, OrtShapeInferContext* context);

// The mixture's basis [M, one filter] and M, and a routed node's routing [C_in, R * M] and
// routing_bias [R * M], for compute_cpu; absent for RegionConv2d.
struct Basis {
  const OrtValue* value = nullptr;
  int64_t count = 0;
  const OrtValue* routing = nullptr;
  const OrtValue* routing_bias = nullptr;
};

// Per-node state: the attributes, checked once when the session is created.
struct RegionConv2dKernel {
  const OrtApi* api;
  Provider provider;
  bool mixture;
  RegionConvAttrs attrs;
  OrtMemoryInfo* cpu_memory = nullptr;  // for workspace from the session's CPU allocator
  // CPU tasks per call: each owns a slice of the workspace, and ONNX Runtime runs them on
  // however many intra-op threads the session has. Read once: the query costs ~2 us.
  int64_t workers = 1;

  OrtStatus* compute(OrtKernelContext* context) const;
  // inputs: X, filters (a mixture's coefficients, null when routed), guide and B (null when the
  // node has no bias).
  OrtStatus* compute_cpu(OrtKernelContext* context, const OrtValue* const inputs[4], const TensorInfo infos[4],
                         const RegionConvShape& shape, const Basis& basis) const;
#ifdef DRCONV_WITH_CUDA
  OrtStatus* compute_cuda(OrtKernelContext* context, const OrtValue* const inputs[4], const TensorInfo infos[4],
                          const RegionConvShape& shape) const;
#endif
};

}  // namespace drconv::ort
