// The RegionConv2d TensorRT plugin (IPluginV3, the TensorRT 10 plugin interface) and its
// creator. The node contract is docs/region_conv_op.md; the kernel is the shared CUDA one
// (plugins/common/region_conv_cuda.cu), the same the ONNX Runtime CUDA op runs.
#pragma once

#include <NvInferRuntime.h>

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "region_conv_node.h"

namespace drconv::trt {

constexpr char const* kPluginName = contract::kRegionConv.name;
constexpr char const* kPluginVersion = contract::kPluginVersion;
// The plugin is version 1 of RegionConv2d: X, filters, guide.
constexpr int32_t kInputs = static_cast<int32_t>(contract::inputs_at(contract::kRegionConv, 1));
constexpr int32_t kX = contract::kX, kFilters = contract::kFilters, kGuide = contract::kGuide;

// Where the plugin and creator send their messages: TensorRT's logger once
// setLoggerFinder has been called, else stderr.
void log(nvinfer1::ILogger::Severity severity, std::string const& message);

// The node's attributes as TensorRT fields (kINT32, the way the ONNX parser hands them over).
// The collection points into the object's own arrays, so a Fields is never copied or moved
// (a copy would point into the original); an owner's copy builds its own from the attrs.
class Fields {
 public:
  explicit Fields(RegionConvAttrs const& attrs);
  Fields(Fields const&) = delete;
  Fields& operator=(Fields const&) = delete;
  nvinfer1::PluginFieldCollection const* collection() const { return &collection_; }

 private:
  std::array<int32_t, 2> strides_{};
  std::array<int32_t, 4> pads_{};
  std::array<int32_t, 2> dilations_{};
  std::array<nvinfer1::PluginField, 3> fields_{};
  nvinfer1::PluginFieldCollection collection_{};
};

class RegionConv2dPlugin : public nvinfer1::IPluginV3,
                           public nvinfer1::IPluginV3OneCore,
                           public nvinfer1::IPluginV3OneBuild,
                           public nvinfer1::IPluginV3OneRuntime {
 public:
  explicit RegionConv2dPlugin(RegionConvAttrs attrs);
  RegionConv2dPlugin(RegionConv2dPlugin const& other);
  RegionConv2dPlugin& operator=(RegionConv2dPlugin const&) = delete;
  ~RegionConv2dPlugin() override = default;

  RegionConvAttrs const& attrs() const { return attrs_; }

  // IPluginV3
  nvinfer1::IPluginCapability* getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept override;
  nvinfer1::IPluginV3* clone() noexcept override;

  // IPluginV3OneCore
  char const* getPluginName() const noexcept override { return kPluginName; }
  char const* getPluginVersion() const noexcept override { return kPluginVersion; }
  char const* getPluginNamespace() const noexcept override { return ""; }

  // IPluginV3OneBuild
  int32_t getNbOutputs() const noexcept override { return 1; }
  int32_t getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs, nvinfer1::DataType const* inputTypes,
                             int32_t nbInputs) const noexcept override;
  int32_t getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs, nvinfer1::DimsExprs const* shapeInputs,
                          int32_t nbShapeInputs, nvinfer1::DimsExprs* outputs, int32_t nbOutputs,
                          nvinfer1::IExprBuilder& exprBuilder) noexcept override;
  bool supportsFormatCombination(int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut, int32_t nbInputs,
                                 int32_t nbOutputs) noexcept override;
  int32_t configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
                          nvinfer1::DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept override;
  size_t getWorkspaceSize(nvinfer1::DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
                          nvinfer1::DynamicPluginTensorDesc const* outputs, int32_t nbOutputs) const noexcept override;

  // IPluginV3OneRuntime
  int32_t onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs, nvinfer1::PluginTensorDesc const* out,
                        int32_t nbOutputs) noexcept override;
  int32_t enqueue(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* outputDesc,
                  void const* const* inputs, void* const* outputs, void* workspace,
                  cudaStream_t stream) noexcept override;
  nvinfer1::IPluginV3* attachToContext(nvinfer1::IPluginResourceContext* context) noexcept override;
  nvinfer1::PluginFieldCollection const* getFieldsToSerialize() noexcept override;

 private:
  // Empty when the three input descriptors fit the contract, else the reason.
  std::string check(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs, RegionConvShape& shape) const;

  RegionConvAttrs attrs_;
  Fields fields_;
};

class RegionConv2dCreator : public nvinfer1::IPluginCreatorV3One {
 public:
  RegionConv2dCreator();

  nvinfer1::IPluginV3* createPlugin(char const* name, nvinfer1::PluginFieldCollection const* fc,
                                    nvinfer1::TensorRTPhase phase) noexcept override;
  nvinfer1::PluginFieldCollection const* getFieldNames() noexcept override { return &field_names_; }
  char const* getPluginName() const noexcept override { return kPluginName; }
  char const* getPluginVersion() const noexcept override { return kPluginVersion; }
  char const* getPluginNamespace() const noexcept override { return ""; }

 private:
  std::vector<nvinfer1::PluginField> fields_;
  nvinfer1::PluginFieldCollection field_names_{};
};

// Reads a PluginFieldCollection into attributes: missing fields keep the contract's
// defaults, int32 and int64 are accepted, attributes TensorRT's ONNX parser adds
// (plugin_version, plugin_namespace) are ignored. Empty on success, else the reason.
std::string parse_fields(nvinfer1::PluginFieldCollection const* fc, RegionConvAttrs& attrs);

}  // namespace drconv::trt
