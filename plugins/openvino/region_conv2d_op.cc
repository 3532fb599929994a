#include "region_conv2d_op.h"

#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "cpu_kernel.h"

namespace drconv::openvino {
namespace {

const char* const kInputs[4] = {"X", "filters", "guide", "B"};

}  // namespace

RegionConv2d::RegionConv2d(const ov::OutputVector& inputs, RegionConvAttrs attrs)
    : Op(inputs), attrs_(std::move(attrs)) {
  constructor_validate_and_infer_types();
}

void RegionConv2d::validate_and_infer_types() {
  const size_t count = get_input_size();
  NODE_VALIDATION_CHECK(this, count == 3 || count == 4,
                        "RegionConv2d: expects 3 or 4 inputs (X, filters, guide[, B]), got ", count);
  const std::string bad_attrs = attrs_.validate();
  NODE_VALIDATION_CHECK(this, bad_attrs.empty(), "RegionConv2d: ", bad_attrs);
  const ov::element::Type type = get_input_element_type(0);
  for (size_t i = 1; i < count; ++i)
    NODE_VALIDATION_CHECK(this, get_input_element_type(i) == type, "RegionConv2d: input ", kInputs[i], " is ",
                          get_input_element_type(i), " but X is ", type, "; all inputs must share one type");
  NODE_VALIDATION_CHECK(this, type.is_dynamic() || type == ov::element::f32,
                        "RegionConv2d: the OpenVINO extension runs float32, got ", type,
                        "; export the model in float32");

  NodeDims dims;
  if (static_dims(*this, dims)) {  // every rule of the other backends
    RegionConvShape shape;
    const std::string bad = shape_of(dims, shape);
    NODE_VALIDATION_CHECK(this, bad.empty(), bad);
    set_output_type(0, type, ov::PartialShape{shape.n, shape.c_out, shape.h_out(), shape.w_out()});
    return;
  }
  // Dynamic: the ranks now, the rest when the shapes are known (evaluate); Y takes N from X,
  // C_out from the filters and H_out, W_out from the guide.
  const ov::PartialShape &x = get_input_partial_shape(0), &f = get_input_partial_shape(1),
                         &g = get_input_partial_shape(2);
  ov::PartialShape y = ov::PartialShape::dynamic(4);
  if (x.rank().is_static()) {
    NODE_VALIDATION_CHECK(this, x.size() == 4, "RegionConv2d: input X must be 4-D [N, C_in, H, W], got ", x);
    y[0] = x[0];
  }
  if (f.rank().is_static()) {
    NODE_VALIDATION_CHECK(this, f.size() == 6, "RegionConv2d: input filters must be 6-D, got ", f);
    y[1] = f[attrs_.layout() == FilterLayout::kIHWO ? 5 : 2];
  }
  if (g.rank().is_static()) {
    NODE_VALIDATION_CHECK(this, g.size() == 4, "RegionConv2d: input guide must be 4-D [N, R, H_out, W_out], got ", g);
    y[2] = g[2];
    y[3] = g[3];
  }
  set_output_type(0, type, y);
}

std::shared_ptr<ov::Node> RegionConv2d::clone_with_new_inputs(const ov::OutputVector& inputs) const {
  return std::make_shared<RegionConv2d>(inputs, attrs_);
}

bool RegionConv2d::visit_attributes(ov::AttributeVisitor& visitor) {
  visit_node_attributes(visitor, attrs_, plugin_version_);
  return true;
}

bool RegionConv2d::has_evaluate() const { return get_input_element_type(0) == ov::element::f32; }

std::string RegionConv2d::shape_of(const NodeDims& dims, RegionConvShape& shape) const {
  const InputDims bias = dims.size() > 3 ? input_dims(dims, 3) : InputDims{};
  return node_shape(attrs_, input_dims(dims, 0), input_dims(dims, 1), input_dims(dims, 2), bias, shape);
}

bool RegionConv2d::evaluate(ov::TensorVector& outputs, const ov::TensorVector& inputs) const {
  RegionConvShape shape;
  const std::string bad = shape_of(float_tensor_dims("RegionConv2d", inputs), shape);
  OPENVINO_ASSERT(bad.empty(), bad);
  const float* bias = inputs.size() > 3 ? floats(inputs[3]) : nullptr;
  run_kernel(floats(inputs[0]), floats(inputs[1]), floats(inputs[2]), outputs[0], shape,
             direct::Epilogue{bias, attrs_.activation == "Relu"});
  return true;
}

}  // namespace drconv::openvino
