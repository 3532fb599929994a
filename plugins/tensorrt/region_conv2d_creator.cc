#include <cstring>
#include <new>

#include "region_conv2d_plugin.h"

namespace drconv::trt {

using nvinfer1::PluginField;
using nvinfer1::PluginFieldType;

namespace {

std::string read_ints(PluginField const& field, std::vector<int64_t>& out) {
  if (field.length < 0 || (field.length > 0 && field.data == nullptr))
    return std::string("field ") + field.name + " has no data";
  out.resize(static_cast<size_t>(field.length));
  for (size_t i = 0; i < out.size(); ++i) {
    if (field.type == PluginFieldType::kINT32)
      out[i] = static_cast<int32_t const*>(field.data)[i];
    else if (field.type == PluginFieldType::kINT64)
      out[i] = static_cast<int64_t const*>(field.data)[i];
    else
      return std::string("field ") + field.name + " must hold int32 or int64 values";
  }
  return {};
}

// A kCHAR field as a string; ONNX string attributes arrive so, with or without a NUL.
std::string read_string(PluginField const& field, std::string& out) {
  if (field.type != PluginFieldType::kCHAR) return std::string("field ") + field.name + " must be a string";
  if (field.length < 0 || (field.length > 0 && field.data == nullptr))
    return std::string("field ") + field.name + " has no data";
  out.assign(static_cast<char const*>(field.data), static_cast<size_t>(field.length));
  while (!out.empty() && out.back() == '\0') out.pop_back();
  return {};
}

}  // namespace

std::string parse_fields(nvinfer1::PluginFieldCollection const* fc, RegionConvAttrs& attrs) {
  attrs = RegionConvAttrs{};
  if (fc == nullptr) return {};
  if (fc->nbFields > 0 && fc->fields == nullptr) return "the field collection has no fields array";
  for (int32_t i = 0; i < fc->nbFields; ++i) {
    PluginField const& field = fc->fields[i];
    if (field.name == nullptr) return "a field has no name";
    std::string bad;
    if (std::strcmp(field.name, contract::kStrides) == 0)
      bad = read_ints(field, attrs.strides);
    else if (std::strcmp(field.name, contract::kPads) == 0)
      bad = read_ints(field, attrs.pads);
    else if (std::strcmp(field.name, contract::kDilations) == 0)
      bad = read_ints(field, attrs.dilations);
    else if (std::strcmp(field.name, contract::kFilterLayout) == 0)
      bad = read_string(field, attrs.filter_layout);
    else if (std::strcmp(field.name, contract::kActivation) == 0)
      bad = read_string(field, attrs.activation);
    else if (std::strcmp(field.name, "plugin_version") != 0 && std::strcmp(field.name, "plugin_namespace") != 0)
      log(nvinfer1::ILogger::Severity::kWARNING, std::string("RegionConv2d: ignoring unknown field ") + field.name);
    if (!bad.empty()) return bad;
  }
  std::string const invalid = attrs.validate();
  if (!invalid.empty()) return invalid;
  // The plugin is version 1 of the node; drconv build lowers version 2's additions to
  // standard layers (a Transpose for IHWO filters, Add and Relu for the epilogue).
  if (attrs.layout() != FilterLayout::kOIHW)
    return "filter_layout " + attrs.filter_layout +
           " is not supported by the TensorRT plugin (OIHW only): build the engine with `drconv build`, which "
           "converts it, or export with --filter-layout OIHW";
  if (!attrs.activation.empty())
    return "activation " + attrs.activation +
           " is not supported by the TensorRT plugin: build the engine with `drconv build`, which converts it, or "
           "export with --no-fuse";
  return {};
}

RegionConv2dCreator::RegionConv2dCreator() {
  fields_.emplace_back(contract::kStrides, nullptr, PluginFieldType::kINT32, 2);
  fields_.emplace_back(contract::kPads, nullptr, PluginFieldType::kINT32, 4);
  fields_.emplace_back(contract::kDilations, nullptr, PluginFieldType::kINT32, 2);
  field_names_.nbFields = static_cast<int32_t>(fields_.size());
  field_names_.fields = fields_.data();
}

nvinfer1::IPluginV3* RegionConv2dCreator::createPlugin(char const* name, nvinfer1::PluginFieldCollection const* fc,
                                                       nvinfer1::TensorRTPhase) noexcept {
  // Build and runtime phases read the same fields (getFieldsToSerialize writes what
  // parse_fields reads), so one path serves both.
  RegionConvAttrs attrs;
  std::string const bad = parse_fields(fc, attrs);
  if (!bad.empty()) {
    log(nvinfer1::ILogger::Severity::kERROR,
        std::string("RegionConv2d (") + (name != nullptr ? name : "unnamed") + "): " + bad);
    return nullptr;
  }
  try {
    return new RegionConv2dPlugin(std::move(attrs));
  } catch (std::exception const&) {
    log(nvinfer1::ILogger::Severity::kERROR, "RegionConv2d: out of memory creating the plugin");
    return nullptr;
  }
}

}  // namespace drconv::trt
