// libdrconv_openvino: drconv::RegionConv2d and drconv::MixtureRegionConv2d for OpenVINO
// 2026.4: the operations, and their mapping from the ONNX nodes of a drconv custom export.
// Load it with ov::Core::add_extension(path) (core.add_extension(path) in Python); its one
// entry point is create_extensions (OPENVINO_CREATE_EXTENSIONS).
#include <openvino/core/extension.hpp>
#include <openvino/core/op_extension.hpp>
#include <openvino/frontend/onnx/extension/conversion.hpp>

#include <cstdint>
#include <exception>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "mixture_region_conv2d_op.h"
#include "region_conv2d_op.h"

namespace {

using drconv::RegionConvAttrs;
using drconv::openvino::MixtureRegionConv2d;
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
  read_attribute(node, drconv::contract::kStrides, "ints", attrs.strides);
  read_attribute(node, drconv::contract::kPads, "ints", attrs.pads);
  read_attribute(node, drconv::contract::kDilations, "ints", attrs.dilations);
  read_attribute(node, drconv::contract::kFilterLayout, "a string", attrs.filter_layout);
  read_attribute(node, drconv::contract::kActivation, "a string", attrs.activation);
  return attrs;
}

// Input i, or an empty output where the node leaves it out (an empty name, or past its end:
// the ONNX frontend gives a NullNode for the former).
ov::Output<ov::Node> optional_input(const ov::frontend::NodeContext& node, size_t i) {
  if (i >= node.get_input_size()) return {};
  ov::Output<ov::Node> input = node.get_input(static_cast<int>(i));
  return std::string(input.get_node()->get_type_name()) == "NullNode" ? ov::Output<ov::Node>{} : input;
}

// drconv::RegionConv2d (docs/region_conv_op.md): X, filters, guide[, B].
ov::OutputVector region_conv2d_from_onnx(const ov::frontend::NodeContext& node) {
  ov::OutputVector inputs;
  for (size_t i = 0; i < node.get_input_size(); ++i) inputs.push_back(node.get_input(static_cast<int>(i)));
  return std::make_shared<RegionConv2d>(inputs, attributes(node))->outputs();
}

// drconv::MixtureRegionConv2d: X, coefficients, basis, guide[, B[, routing[, routing_bias]]], the
// inputs the node leaves out said by the operation's flags (OpenVINO has no empty inputs).
ov::OutputVector mixture_region_conv2d_from_onnx(const ov::frontend::NodeContext& node) {
  namespace c = drconv::contract;
  const ov::Output<ov::Node> coefficients = optional_input(node, c::kCoefficients);
  const ov::Output<ov::Node> bias = optional_input(node, c::kMixtureBias), routing = optional_input(node, c::kRouting);
  const ov::Output<ov::Node> routing_bias = optional_input(node, c::kRoutingBias);
  const MixtureRegionConv2d::Inputs which{routing.get_node() != nullptr, bias.get_node() != nullptr,
                                          routing_bias.get_node() != nullptr};
  const std::string bad = c::mixture_inputs_error(coefficients.get_node() != nullptr, which.routed, which.routing_bias);
  if (!bad.empty()) OPENVINO_THROW(bad);
  ov::OutputVector inputs{node.get_input(c::kMixtureX), which.routed ? routing : coefficients,
                          node.get_input(c::kBasis), node.get_input(c::kMixtureGuide)};
  if (which.bias) inputs.push_back(bias);
  if (which.routing_bias) inputs.push_back(routing_bias);
  return std::make_shared<MixtureRegionConv2d>(inputs, attributes(node), which)->outputs();
}

}  // namespace

OPENVINO_CREATE_EXTENSIONS(std::vector<ov::Extension::Ptr>({
    std::make_shared<ov::OpExtension<RegionConv2d>>(),  // OpenVINO IR (ov::save_model, read_model)
    std::make_shared<ov::OpExtension<MixtureRegionConv2d>>(),
    // OpenVINO's ONNX frontend shows these no version of the domain: drconv's loader checks it.
    std::make_shared<ov::frontend::onnx::ConversionExtension>(drconv::contract::kRegionConv.name,
                                                              drconv::contract::kDomain, region_conv2d_from_onnx),
    std::make_shared<ov::frontend::onnx::ConversionExtension>(
        drconv::contract::kMixture.name, drconv::contract::kDomain, mixture_region_conv2d_from_onnx),
}));
