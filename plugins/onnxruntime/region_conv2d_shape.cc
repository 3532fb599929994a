// Output shape inference (the C API's InferOutputShapeFn, ONNX Runtime >= 1.17): Y is
// [N, C_out, H_out, W_out] with N from X, C_out from the filters (or a mixture's basis) and
// H_out, W_out from the guide, symbolic names kept. Graphs without value_info then still
// give ONNX Runtime's optimizers (the NCHWc layout of the Convs around the node) their
// channel counts. Shapes it cannot read are left to the run-time checks.
#include <cstring>
#include <string>
#include <vector>

#include "region_conv2d_op.h"

namespace drconv::ort {
namespace {

// One input's element type and dims (-1 and its name where symbolic). The info, and the
// strings `names` points into, belong to the context (ONNX Runtime keeps them for the
// call: releasing them here was a double free).
class InputShape {
 public:
  explicit InputShape(const OrtApi& api) : api_(api) {}

  // False when ONNX Runtime knows no shape for it.
  bool read(OrtShapeInferContext* context, size_t index) {
    size_t rank = 0;
    if (!ok(api_.ShapeInferContext_GetInputTypeShape(context, index, &info_)) ||
        !ok(api_.GetTensorElementType(info_, &type)) || !ok(api_.GetDimensionsCount(info_, &rank)))
      return false;
    dims.resize(rank);
    names.resize(rank);
    return ok(api_.GetDimensions(info_, dims.data(), rank)) &&
           ok(api_.GetSymbolicDimensions(info_, names.data(), rank));
  }

  ONNXTensorElementDataType type = ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
  std::vector<int64_t> dims;
  std::vector<const char*> names;

 private:
  bool ok(OrtStatus* status) const {
    if (status == nullptr) return true;
    api_.ReleaseStatus(status);
    return false;
  }

  const OrtApi& api_;
  OrtTensorTypeAndShapeInfo* info_ = nullptr;
};

// y_channel_block, 0 where absent or unreadable (the run-time checks then report it).
int64_t y_block(const OrtApi& api, OrtShapeInferContext* context) {
  const OrtOpAttr* attr = nullptr;
  OrtStatus* status = api.ShapeInferContext_GetAttribute(context, contract::kYChannelBlock, &attr);
  int64_t value = 0;
  size_t size = 0;
  if (status == nullptr && attr != nullptr) status = api.ReadOpAttr(attr, ORT_OP_ATTR_INT, &value, sizeof(value), &size);
  if (status != nullptr) {
    api.ReleaseStatus(status);
    return 0;
  }
  return value;
}

bool ihwo(const OrtApi& api, OrtShapeInferContext* context) {
  const OrtOpAttr* attr = nullptr;
  OrtStatus* status = api.ShapeInferContext_GetAttribute(context, contract::kFilterLayout, &attr);
  if (status != nullptr || attr == nullptr) {
    if (status != nullptr) api.ReleaseStatus(status);
    return false;  // absent: OIHW
  }
  char text[8] = {};
  size_t size = 0;
  status = api.ReadOpAttr(attr, ORT_OP_ATTR_STRING, text, sizeof(text) - 1, &size);
  if (status != nullptr) {
    api.ReleaseStatus(status);
    return false;
  }
  return std::strncmp(text, "IHWO", 4) == 0 && size == 4;
}

}  // namespace

OrtStatus* infer_output_shape(const OrtCustomOp* op, OrtShapeInferContext* context) {
  const auto& self = *static_cast<const RegionConv2dOp*>(op);
  const OrtApi& api = *self.api;
  // A mixture's C_out is in its basis, where RegionConv2d's is in its filters.
  const size_t filters_at = self.mixture ? size_t{contract::kBasis} : size_t{contract::kFilters};
  const size_t guide_at = self.mixture ? size_t{contract::kMixtureGuide} : size_t{contract::kGuide};
  InputShape x(api), filters(api), guide(api);
  if (!x.read(context, 0) || !filters.read(context, filters_at) || !guide.read(context, guide_at)) return nullptr;
  if (x.dims.size() != 4 || guide.dims.size() != 4 || filters.dims.size() != (self.mixture ? 5u : 6u)) return nullptr;
  // Where C_out sits: filters [N, R, C_out, ...] or [N, R, ..., C_out]; a basis has no N, R but M.
  const bool last = ihwo(api, context);
  const size_t c_out = self.mixture ? (last ? 4 : 1) : (last ? 5 : 2);
  // In the blocked layout, C_out padded to whole blocks (a symbolic C_out stays as it is).
  const int64_t block = y_block(api, context), channels = filters.dims[c_out];
  const bool padded = block > 0 && channels > 0;
  const int64_t dims[4] = {x.dims[0], padded ? RegionConvShape::padded_channels(channels, block) : channels,
                           guide.dims[2], guide.dims[3]};
  const char* names[4] = {x.names[0], padded ? "" : filters.names[c_out], guide.names[2], guide.names[3]};
  OrtTensorTypeAndShapeInfo* out = nullptr;
  DRCONV_ORT_RETURN_IF_ERROR(api.CreateTensorTypeAndShapeInfo(&out));
  OrtStatus* status = api.SetTensorElementType(out, x.type);
  if (status == nullptr) status = api.SetDimensions(out, dims, 4);
  if (status == nullptr) status = api.SetSymbolicDimensions(out, names, 4);
  if (status == nullptr) status = api.ShapeInferContext_SetOutputTypeShape(context, 0, out);
  api.ReleaseTensorTypeAndShapeInfo(out);
  return status;
}

}  // namespace drconv::ort
