// libdrconv_openvino: drconv::RegionConv2d for OpenVINO (>= 2026.4): the operation, and its
// mapping from the ONNX node of a drconv custom export. Load it with
// ov::Core::add_extension(path) (core.add_extension(path) in Python); its one entry point is
// create_extensions (OPENVINO_CREATE_EXTENSIONS).
#include <openvino/core/extension.hpp>
#include <openvino/core/op_extension.hpp>
#include <openvino/frontend/onnx/extension/conversion.hpp>
#include <openvino/op/add.hpp>
#include <openvino/op/constant.hpp>
#include <openvino/op/matmul.hpp>
#include <openvino/op/reduce_mean.hpp>
#include <openvino/op/reshape.hpp>
#include <openvino/op/sigmoid.hpp>

#include <cstdint>
#include <memory>
#include <exception>
#include <string>
#include <type_traits>
#include <vector>

#include "region_conv2d_op.h"

namespace {

using drconv::RegionConvAttrs;
using drconv::openvino::RegionConv2d;

// Attribute `name` as T, or `value` when the node has none. One of another type is an error,
// as in the other backends (the frontend would turn ints into a string, floats into an
// exception without the attribute's name).
template <typename T>
void read_attribute(const ov::frontend::NodeContext& node, const std::string& name, const char* type, T& value) {
  if (!node.has_attribute(name)) return;
  try {
    value = node.get_attribute<T>(name);
  } catch (const std::exception&) {
    OPENVINO_THROW(node.get_op_type(), ": attribute ", name, " must be ", type);
  }
  if constexpr (std::is_same_v<T, std::string>) {  // a string attribute, not ints or floats printed as one
    const ov::Any raw = node.get_attribute_as_any(name);
    if (raw.is<std::vector<int64_t>>() || raw.is<int64_t>() || raw.is<std::vector<float>>() || raw.is<float>())
      OPENVINO_THROW(node.get_op_type(), ": attribute ", name, " must be ", type);
  }
}

// A node's attributes; those absent take the defaults of version 1, as in the other backends.
RegionConvAttrs attributes(const ov::frontend::NodeContext& node) {
  RegionConvAttrs attrs;
  read_attribute(node, "strides", "ints", attrs.strides);
  read_attribute(node, "pads", "ints", attrs.pads);
  read_attribute(node, "dilations", "ints", attrs.dilations);
  read_attribute(node, "filter_layout", "a string", attrs.filter_layout);
  read_attribute(node, "activation", "a string", attrs.activation);
  return attrs;
}

// Input i, or an empty output where the node leaves it out (an empty name, or past its end:
// the ONNX frontend gives a NullNode for the former).
ov::Output<ov::Node> optional_input(const ov::frontend::NodeContext& node, size_t i) {
  if (i >= node.get_input_size()) return {};
  ov::Output<ov::Node> input = node.get_input(static_cast<int>(i));
  return std::string(input.get_node()->get_type_name()) == "NullNode" ? ov::Output<ov::Node>{} : input;
}

ov::Output<ov::Node> i64s(const std::vector<int64_t>& values) {
  return ov::op::v0::Constant::create(ov::element::i64, ov::Shape{values.size()}, values);
}

// drconv::RegionConv2d (docs/region_conv_op.md): X, filters, guide[, B].
ov::OutputVector region_conv2d_from_onnx(const ov::frontend::NodeContext& node) {
  ov::OutputVector inputs;
  for (size_t i = 0; i < node.get_input_size(); ++i) inputs.push_back(node.get_input(static_cast<int>(i)));
  return std::make_shared<RegionConv2d>(inputs, attributes(node))->outputs();
}

// drconv::MixtureRegionConv2d: X, coefficients, basis, guide[, B[, routing[, routing_bias]]],
// as OpenVINO's own MatMul (and a routed node's ReduceMean, MatMul, Add, Sigmoid) making the
// filters of a RegionConv2d. The basis must have a static shape (it is a constant in exports).
ov::OutputVector mixture_region_conv2d_from_onnx(const ov::frontend::NodeContext& node) {
  const ov::Output<ov::Node> x = node.get_input(0), basis = node.get_input(2), guide = node.get_input(3);
  const ov::Output<ov::Node> bias = optional_input(node, 4), routing = optional_input(node, 5);
  ov::Output<ov::Node> coefficients = optional_input(node, 1);
  const ov::PartialShape& basis_shape = basis.get_partial_shape();
  if (!basis_shape.is_static() || basis_shape.size() != 5)
    OPENVINO_THROW("MixtureRegionConv2d: input basis must be 5-D with a static shape, got ", basis_shape);
  const ov::Shape one = basis_shape.to_shape();
  const auto bases = static_cast<int64_t>(one[0]);
  if (routing.get_node() != nullptr) {  // coefficients = sigmoid(mean_hw(X) @ routing + routing_bias), [N, R, M]
    ov::Output<ov::Node> linear = std::make_shared<ov::op::v0::MatMul>(
        std::make_shared<ov::op::v1::ReduceMean>(x, i64s({2, 3}), false), routing);
    const ov::Output<ov::Node> routing_bias = optional_input(node, 6);
    if (routing_bias.get_node() != nullptr) linear = std::make_shared<ov::op::v1::Add>(linear, routing_bias);
    coefficients = std::make_shared<ov::op::v1::Reshape>(std::make_shared<ov::op::v0::Sigmoid>(linear),
                                                         i64s({0, -1, bases}), true);
  }
  if (coefficients.get_node() == nullptr)
    OPENVINO_THROW("MixtureRegionConv2d: input coefficients is missing (and the node has no routing)");
  // filters [N, R, one filter] = coefficients [N, R, M] @ basis [M, one filter's size].
  const auto rows = std::make_shared<ov::op::v1::Reshape>(basis, i64s({bases, -1}), false);
  const auto mixed = std::make_shared<ov::op::v0::MatMul>(coefficients, rows);
  const std::vector<int64_t> filter_dims{0, 0, static_cast<int64_t>(one[1]), static_cast<int64_t>(one[2]),
                                         static_cast<int64_t>(one[3]), static_cast<int64_t>(one[4])};
  const auto filters = std::make_shared<ov::op::v1::Reshape>(mixed, i64s(filter_dims), true);
  ov::OutputVector inputs{x, filters, guide};
  if (bias.get_node() != nullptr) inputs.push_back(bias);
  return std::make_shared<RegionConv2d>(inputs, attributes(node))->outputs();
}

}  // namespace

OPENVINO_CREATE_EXTENSIONS(std::vector<ov::Extension::Ptr>({
    std::make_shared<ov::OpExtension<RegionConv2d>>(),  // OpenVINO IR (ov::save_model, read_model)
    std::make_shared<ov::frontend::onnx::ConversionExtension>("RegionConv2d", "drconv", region_conv2d_from_onnx),
    std::make_shared<ov::frontend::onnx::ConversionExtension>("MixtureRegionConv2d", "drconv",
                                                              mixture_region_conv2d_from_onnx),
}));
