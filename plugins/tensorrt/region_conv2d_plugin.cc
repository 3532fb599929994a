#include "region_conv2d_plugin.h"

#include <cuda_fp16.h>

#include <exception>
#include <new>

#include "region_conv_cuda.h"

namespace drconv::trt {

using nvinfer1::DataType;
using nvinfer1::TensorFormat;

Fields::Fields(RegionConvAttrs const& attrs) {
  for (size_t i = 0; i < 2; ++i) strides_[i] = static_cast<int32_t>(attrs.strides[i]);
  for (size_t i = 0; i < 4; ++i) pads_[i] = static_cast<int32_t>(attrs.pads[i]);
  for (size_t i = 0; i < 2; ++i) dilations_[i] = static_cast<int32_t>(attrs.dilations[i]);
  fields_[0] = nvinfer1::PluginField("strides", strides_.data(), nvinfer1::PluginFieldType::kINT32, 2);
  fields_[1] = nvinfer1::PluginField("pads", pads_.data(), nvinfer1::PluginFieldType::kINT32, 4);
  fields_[2] = nvinfer1::PluginField("dilations", dilations_.data(), nvinfer1::PluginFieldType::kINT32, 2);
  collection_.nbFields = static_cast<int32_t>(fields_.size());
  collection_.fields = fields_.data();
}

RegionConv2dPlugin::RegionConv2dPlugin(RegionConvAttrs attrs) : attrs_(std::move(attrs)), fields_(attrs_) {}

// The fields point into the object that owns them, so a copy rebuilds its own.
RegionConv2dPlugin::RegionConv2dPlugin(RegionConv2dPlugin const& other)
    : nvinfer1::IPluginV3(other),
      nvinfer1::IPluginV3OneCore(other),
      nvinfer1::IPluginV3OneBuild(other),
      nvinfer1::IPluginV3OneRuntime(other),
      attrs_(other.attrs_),
      fields_(attrs_) {}

nvinfer1::IPluginCapability* RegionConv2dPlugin::getCapabilityInterface(
    nvinfer1::PluginCapabilityType type) noexcept {
  switch (type) {
    case nvinfer1::PluginCapabilityType::kCORE:
      return static_cast<nvinfer1::IPluginV3OneCore*>(this);
    case nvinfer1::PluginCapabilityType::kBUILD:
      return static_cast<nvinfer1::IPluginV3OneBuild*>(this);
    case nvinfer1::PluginCapabilityType::kRUNTIME:
      return static_cast<nvinfer1::IPluginV3OneRuntime*>(this);
  }
  return nullptr;
}

// Copying the attributes allocates, and nothing may throw out of a noexcept method: a
// failed copy is a null plugin, which TensorRT reports.
nvinfer1::IPluginV3* RegionConv2dPlugin::clone() noexcept {
  try {
    return new RegionConv2dPlugin(*this);
  } catch (std::exception const& exc) {
    log(nvinfer1::ILogger::Severity::kERROR, std::string("RegionConv2d: clone failed: ") + exc.what());
    return nullptr;
  }
}

int32_t RegionConv2dPlugin::getOutputDataTypes(DataType* outputTypes, int32_t nbOutputs, DataType const* inputTypes,
                                               int32_t nbInputs) const noexcept {
  if (nbInputs != kInputs || nbOutputs != 1) return -1;
  outputTypes[0] = inputTypes[kX];  // strongly typed: Y has X's type
  return 0;
}

int32_t RegionConv2dPlugin::getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs,
                                            nvinfer1::DimsExprs const*, int32_t, nvinfer1::DimsExprs* outputs,
                                            int32_t nbOutputs, nvinfer1::IExprBuilder&) noexcept {
  if (nbInputs != kInputs || nbOutputs != 1 || inputs[kX].nbDims != 4 || inputs[kFilters].nbDims != 6 ||
      inputs[kGuide].nbDims != 4) {
    log(nvinfer1::ILogger::Severity::kERROR,
        "RegionConv2d: inputs must be X [N, C_in, H, W], filters [N, R, C_out, C_in, kh, kw], guide [N, R, H_out, "
        "W_out]");
    return -1;
  }
  // Y [N, C_out, H_out, W_out]: the guide carries the output's spatial size (enqueue
  // checks it against the conv formula on every call).
  outputs[0].nbDims = 4;
  outputs[0].d[0] = inputs[kX].d[0];
  outputs[0].d[1] = inputs[kFilters].d[2];
  outputs[0].d[2] = inputs[kGuide].d[2];
  outputs[0].d[3] = inputs[kGuide].d[3];
  return 0;
}

bool RegionConv2dPlugin::supportsFormatCombination(int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut,
                                                   int32_t nbInputs, int32_t nbOutputs) noexcept {
  if (nbInputs != kInputs || nbOutputs != 1 || pos < 0 || pos > kInputs) return false;
  nvinfer1::PluginTensorDesc const& desc = inOut[pos].desc;
  if (desc.format != TensorFormat::kLINEAR) return false;
  if (pos == 0) return desc.type == DataType::kFLOAT || desc.type == DataType::kHALF;
  return desc.type == inOut[0].desc.type;  // one type for all inputs and the output
}

int32_t RegionConv2dPlugin::configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
                                            nvinfer1::DynamicPluginTensorDesc const*, int32_t nbOutputs) noexcept {
  if (nbInputs != kInputs || nbOutputs != 1) return -1;
  // The kernel's own limits, checked on the profile's largest shapes so that the engine
  // build fails with the reason instead of every enqueue. Shapes that do not fit each
  // other are onShapeChange's to report, with the runtime sizes.
  nvinfer1::PluginTensorDesc largest[kInputs];
  for (int i = 0; i < kInputs; ++i) {
    largest[i] = in[i].desc;
    largest[i].dims = in[i].max;
  }
  RegionConvShape shape;
  if (!check(largest, kInputs, shape).empty()) return 0;
  std::string const unsupported = cuda_shape_error(shape);
  if (unsupported.empty()) return 0;
  log(nvinfer1::ILogger::Severity::kERROR, "RegionConv2d: " + unsupported);
  return -1;
}

size_t RegionConv2dPlugin::getWorkspaceSize(nvinfer1::DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
                                            nvinfer1::DynamicPluginTensorDesc const*, int32_t) const noexcept {
  // The kernel buckets pixels by region in scratch: sized for the profile's largest
  // batch, region count and guide (whose spatial size is the output's).
  if (nbInputs != kInputs || inputs[kFilters].max.nbDims != 6 || inputs[kGuide].max.nbDims != 4) return 0;
  auto dim = [](int64_t v) { return v < 0 ? int64_t{0} : v; };
  nvinfer1::Dims const& guide = inputs[kGuide].max;
  return region_conv_cuda_workspace_size(dim(guide.d[0]), dim(inputs[kFilters].max.d[1]),
                                         dim(guide.d[2]) * dim(guide.d[3]));
}

std::string RegionConv2dPlugin::check(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs,
                                      RegionConvShape& shape) const {
  if (nbInputs != kInputs)
    return "RegionConv2d: expects " + std::to_string(kInputs) + " inputs (X, filters, guide), got " +
           std::to_string(nbInputs) +
           " (a bias B is lowered to an Add by `drconv build`)";
  int64_t dims[kInputs][nvinfer1::Dims::MAX_DIMS] = {};
  size_t ranks[kInputs] = {};
  for (int i = 0; i < kInputs; ++i) {
    ranks[i] = static_cast<size_t>(in[i].dims.nbDims < 0 ? 0 : in[i].dims.nbDims);
    for (size_t d = 0; d < ranks[i]; ++d) dims[i][d] = in[i].dims.d[d];
  }
  return make_shape(attrs_, dims[kX], ranks[kX], dims[kFilters], ranks[kFilters], dims[kGuide], ranks[kGuide], shape);
}

int32_t RegionConv2dPlugin::onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs,
                                          nvinfer1::PluginTensorDesc const*, int32_t) noexcept {
  RegionConvShape shape;
  std::string const bad = check(in, nbInputs, shape);
  if (bad.empty()) return 0;
  log(nvinfer1::ILogger::Severity::kERROR, bad);
  return -1;
}

int32_t RegionConv2dPlugin::enqueue(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const*,
                                    void const* const* inputs, void* const* outputs, void* workspace,
                                    cudaStream_t stream) noexcept {
  RegionConvShape shape;  // read from this call's descriptors: shapes change within a profile
  std::string bad = check(inputDesc, kInputs, shape);
  if (bad.empty()) bad = cuda_shape_error(shape);
  if (!bad.empty()) {
    log(nvinfer1::ILogger::Severity::kERROR, bad);
    return -1;
  }
  cudaError_t err = cudaSuccess;
  if (inputDesc[0].type == DataType::kHALF) {
    err = region_conv_cuda_forward<__half>(
        static_cast<__half const*>(inputs[kX]), static_cast<__half const*>(inputs[kFilters]),
        static_cast<__half const*>(inputs[kGuide]), static_cast<__half*>(outputs[0]), shape, workspace, stream);
  } else {
    err = region_conv_cuda_forward<float>(static_cast<float const*>(inputs[kX]),
                                          static_cast<float const*>(inputs[kFilters]),
                                          static_cast<float const*>(inputs[kGuide]), static_cast<float*>(outputs[0]),
                                          shape, workspace, stream);
  }
  if (err == cudaSuccess) return 0;
  log(nvinfer1::ILogger::Severity::kERROR, std::string("RegionConv2d: kernel launch failed: ") + cudaGetErrorString(err));
  return -1;
}

nvinfer1::IPluginV3* RegionConv2dPlugin::attachToContext(nvinfer1::IPluginResourceContext*) noexcept {
  return clone();  // no per-context resources
}

nvinfer1::PluginFieldCollection const* RegionConv2dPlugin::getFieldsToSerialize() noexcept {
  return fields_.collection();
}

}  // namespace drconv::trt
