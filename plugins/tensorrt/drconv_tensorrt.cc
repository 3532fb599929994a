// libdrconv_tensorrt: the RegionConv2d plugin for TensorRT >= 10, loaded the TensorRT-10
// way (IPluginRegistry::loadLibrary, trt.get_plugin_registry().load_library,
// trtexec --dynamicPlugins): it exports getCreators and setLoggerFinder and registers
// nothing by itself, so loading it touches nothing until TensorRT asks.
#include <atomic>
#include <cstdio>

#include "region_conv2d_plugin.h"

namespace drconv::trt {
namespace {

// The one piece of state the TensorRT plugin ABI requires: the creator it hands out and
// the logger finder it is given, both owned by this library for its lifetime.
struct Library {
  RegionConv2dCreator creator;
  std::atomic<nvinfer1::ILoggerFinder*> logger_finder{nullptr};
};

Library& library() {
  static Library instance;
  return instance;
}

}  // namespace

void log(nvinfer1::ILogger::Severity severity, std::string const& message) {
  nvinfer1::ILoggerFinder* finder = library().logger_finder.load();
  nvinfer1::ILogger* logger = finder != nullptr ? finder->findLogger() : nullptr;
  if (logger != nullptr) {
    logger->log(severity, message.c_str());
  } else if (severity <= nvinfer1::ILogger::Severity::kWARNING) {
    std::fprintf(stderr, "[drconv] %s\n", message.c_str());
  }
}

}  // namespace drconv::trt

extern "C" __attribute__((visibility("default"))) void setLoggerFinder(nvinfer1::ILoggerFinder* finder) {
  drconv::trt::library().logger_finder.store(finder);
}

extern "C" __attribute__((visibility("default"))) nvinfer1::IPluginCreatorInterface* const* getCreators(
    int32_t& nbCreators) {
  static nvinfer1::IPluginCreatorInterface* const creators[] = {&drconv::trt::library().creator};
  nbCreators = 1;
  return creators;
}
