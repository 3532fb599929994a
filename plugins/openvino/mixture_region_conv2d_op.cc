#include "mixture_region_conv2d_op.h"

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "cpu_kernel.h"

namespace drconv::openvino {
namespace {

// The ONNX node's first four positions (the coefficients' taken by the routing when routed),
// then B and routing_bias as present: OpenVINO has no empty inputs.
constexpr size_t kX = contract::kMixtureX, kCoefficients = contract::kCoefficients, kBasis = contract::kBasis,
                 kGuide = contract::kMixtureGuide;

}  // namespace

MixtureRegionConv2d::MixtureRegionConv2d(const ov::OutputVector& inputs, RegionConvAttrs attrs, Inputs which)
    : Op(inputs), attrs_(std::move(attrs)), which_(which) {
  constructor_validate_and_infer_types();
}

std::string MixtureRegionConv2d::shape_of(const NodeDims& dims, RegionConvShape& shape) const {
  const InputDims none{}, z = input_dims(dims, kCoefficients);
  return mixture_shape(attrs_, input_dims(dims, kX), which_.routed ? none : z, input_dims(dims, kBasis),
                       input_dims(dims, kGuide), which_.bias ? input_dims(dims, kGuide + 1) : none,
                       which_.routed ? z : none, which_.routing_bias ? input_dims(dims, dims.size() - 1) : none,
                       shape);
}

void MixtureRegionConv2d::validate_and_infer_types() {
  const size_t count = 4 + which_.bias + which_.routing_bias;
  NODE_VALIDATION_CHECK(this, get_input_size() == count, "MixtureRegionConv2d: expects ", count, " inputs, got ",
                        get_input_size());
  NODE_VALIDATION_CHECK(this, !which_.routing_bias || which_.routed,
                        "MixtureRegionConv2d: input routing_bias needs the routing input");
  const std::string bad_attrs = attrs_.validate();
  NODE_VALIDATION_CHECK(this, bad_attrs.empty(), "MixtureRegionConv2d: ", bad_attrs);
  const ov::element::Type type = get_input_element_type(0);
  for (size_t i = 1; i < count; ++i)
    NODE_VALIDATION_CHECK(this, get_input_element_type(i) == type, "MixtureRegionConv2d: input ", i, " is ",
                          get_input_element_type(i), " but X is ", type, "; all inputs must share one type");
  NODE_VALIDATION_CHECK(this, type.is_dynamic() || type == ov::element::f32,
                        "MixtureRegionConv2d: the OpenVINO extension runs float32, got ", type);
  NodeDims dims;
  if (static_dims(*this, dims)) {  // every rule of the ONNX Runtime library
    RegionConvShape shape;
    const std::string bad = shape_of(dims, shape);
    NODE_VALIDATION_CHECK(this, bad.empty(), bad);
    set_output_type(0, type, ov::PartialShape{shape.n, shape.c_out, shape.h_out(), shape.w_out()});
    return;
  }
  // Dynamic: Y takes N from X, C_out from the basis and H_out, W_out from the guide.
  const ov::PartialShape &x = get_input_partial_shape(kX), &basis = get_input_partial_shape(kBasis),
                         &guide = get_input_partial_shape(kGuide);
  ov::PartialShape y = ov::PartialShape::dynamic(4);
  if (x.rank().is_static() && x.size() == 4) y[0] = x[0];
  if (basis.rank().is_static() && basis.size() == 5) y[1] = basis[attrs_.layout() == FilterLayout::kIHWO ? 4 : 1];
  if (guide.rank().is_static() && guide.size() == 4) {
    y[2] = guide[2];
    y[3] = guide[3];
  }
  set_output_type(0, type, y);
}

std::shared_ptr<ov::Node> MixtureRegionConv2d::clone_with_new_inputs(const ov::OutputVector& inputs) const {
  return std::make_shared<MixtureRegionConv2d>(inputs, attrs_, which_);
}

bool MixtureRegionConv2d::visit_attributes(ov::AttributeVisitor& visitor) {
  visit_node_attributes(visitor, attrs_, plugin_version_);
  visitor.on_attribute("routed", which_.routed);
  visitor.on_attribute("bias", which_.bias);
  visitor.on_attribute("routing_bias", which_.routing_bias);
  return true;
}

bool MixtureRegionConv2d::has_evaluate() const { return get_input_element_type(0) == ov::element::f32; }

bool MixtureRegionConv2d::evaluate(ov::TensorVector& outputs, const ov::TensorVector& inputs) const {
  const NodeDims dims = float_tensor_dims("MixtureRegionConv2d", inputs);
  RegionConvShape shape;
  const std::string bad = shape_of(dims, shape);
  OPENVINO_ASSERT(bad.empty(), bad);
  const float* z = floats(inputs[kCoefficients]);
  Mixture mixture{which_.routed ? nullptr : z, floats(inputs[kBasis]), dims[kBasis][0],
                  which_.routed ? z : nullptr, which_.routing_bias ? floats(inputs.back()) : nullptr};
  const direct::Epilogue epilogue{which_.bias ? floats(inputs[kGuide + 1]) : nullptr, attrs_.activation == "Relu"};
  run_kernel(floats(inputs[kX]), nullptr, floats(inputs[kGuide]), outputs[0], shape, epilogue, &mixture);
  return true;
}

}  // namespace drconv::openvino
