// Host test of libdrconv_tensorrt, without a GPU and without libnvinfer: loads the library
// by path the way IPluginRegistry::loadLibrary does (getCreators, setLoggerFinder) and
// checks the creator, the plugin's build-time methods, and serialization.
//
// usage: tensorrt_plugin_test path/to/libdrconv_tensorrt.so
//        tensorrt_plugin_test path/to/libdrconv_tensorrt.so --node OP_TYPE PLUGIN_VERSION [NAME=i:1,2 | NAME=s:TEXT]...
// The second form does what TensorRT's ONNX parser does with one ONNX node: look the creator up
// by op_type and plugin_version, and create the plugin from the node's attributes (ints as
// kINT32 fields, strings as kCHAR); it prints "ok" or "FAIL" with the creator's reason.
#include <NvInferRuntime.h>
#include <dlfcn.h>

#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

using namespace nvinfer1;

namespace {

int failures = 0, checks = 0;

void expect(bool ok, std::string const& what) {
  ++checks;
  if (!ok) ++failures;
  std::printf("%s %s\n", ok ? "ok  " : "FAIL", what.c_str());
}

struct CapturingLogger : ILogger {
  std::vector<std::string> errors;
  void log(Severity severity, AsciiChar const* msg) noexcept override {
    if (severity <= Severity::kERROR) errors.emplace_back(msg);
  }
};

struct Finder : ILoggerFinder {
  explicit Finder(ILogger* logger) : logger_(logger) {}
  ILogger* findLogger() override { return logger_; }
  ILogger* logger_;
};

struct PluginDeleter {
  void operator()(IPluginV3* plugin) const { delete plugin; }
};
using PluginPtr = std::unique_ptr<IPluginV3, PluginDeleter>;

PluginFieldCollection collection(std::vector<PluginField> const& fields) {
  return PluginFieldCollection{static_cast<int32_t>(fields.size()), fields.data()};
}

// The three ints fields of a plugin's serialization, as one comparable vector.
std::vector<int64_t> serialized(IPluginV3* plugin) {
  auto* runtime = static_cast<IPluginV3OneRuntime*>(plugin->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
  PluginFieldCollection const* fc = runtime->getFieldsToSerialize();
  std::vector<int64_t> out;
  for (int32_t i = 0; i < fc->nbFields; ++i) {
    out.push_back(-1000 - i);  // a separator, so that field boundaries count
    auto const* data = static_cast<int32_t const*>(fc->fields[i].data);
    for (int32_t j = 0; j < fc->fields[i].length; ++j) out.push_back(data[j]);
  }
  return out;
}

DynamicPluginTensorDesc desc(DataType type, TensorFormat format) {
  DynamicPluginTensorDesc d{};
  d.desc.type = type;
  d.desc.format = format;
  return d;
}

// One ONNX node's attributes as the parser passes them: NAME=i:1,2 (ints) or NAME=s:TEXT.
struct NodeFields {
  std::vector<std::string> names;
  std::vector<std::vector<int32_t>> ints;
  std::vector<std::string> texts;
  std::vector<PluginField> fields;

  bool parse(int count, char** args) {
    names.reserve(count);
    ints.reserve(count);
    texts.reserve(count);
    for (int i = 0; i < count; ++i) {
      std::string arg = args[i];
      std::size_t eq = arg.find('=');
      if (eq == std::string::npos || arg.size() < eq + 3 || arg[eq + 2] != ':') return false;
      names.push_back(arg.substr(0, eq));
      std::string value = arg.substr(eq + 3);
      if (arg[eq + 1] == 's') {
        texts.push_back(value);
        fields.emplace_back(names.back().c_str(), texts.back().c_str(), PluginFieldType::kCHAR,
                            static_cast<int32_t>(texts.back().size()));
      } else if (arg[eq + 1] == 'i') {
        ints.emplace_back();
        for (std::size_t at = 0; at <= value.size();) {
          std::size_t comma = value.find(',', at);
          if (comma == std::string::npos) comma = value.size();
          ints.back().push_back(static_cast<int32_t>(std::stol(value.substr(at, comma - at))));
          at = comma + 1;
        }
        fields.emplace_back(names.back().c_str(), ints.back().data(), PluginFieldType::kINT32,
                            static_cast<int32_t>(ints.back().size()));
      } else {
        return false;
      }
    }
    return true;
  }
};

int create_from_node(IPluginCreatorInterface* const* creators, int32_t count, CapturingLogger& logger, int argc,
                     char** argv) {
  if (argc < 5) {
    std::fprintf(stderr, "usage: %s LIBRARY --node OP_TYPE PLUGIN_VERSION [NAME=i:1,2 | NAME=s:TEXT]...\n", argv[0]);
    return 2;
  }
  IPluginCreatorV3One* creator = nullptr;
  for (int32_t i = 0; i < count; ++i) {
    auto* candidate = static_cast<IPluginCreatorV3One*>(creators[i]);
    if (std::strcmp(candidate->getPluginName(), argv[3]) == 0 && std::strcmp(candidate->getPluginVersion(), argv[4]) == 0)
      creator = candidate;
  }
  if (creator == nullptr) {
    std::printf("FAIL no creator %s version %s\n", argv[3], argv[4]);
    return 1;
  }
  NodeFields node;
  if (!node.parse(argc - 5, argv + 5)) {
    std::fprintf(stderr, "fields are NAME=i:1,2 or NAME=s:TEXT\n");
    return 2;
  }
  PluginFieldCollection fc = collection(node.fields);
  PluginPtr plugin(creator->createPlugin("node", &fc, TensorRTPhase::kBUILD));
  if (plugin == nullptr) {
    std::printf("FAIL %s\n", logger.errors.empty() ? "createPlugin returned null" : logger.errors.back().c_str());
    return 1;
  }
  std::printf("ok %s version %s created from %d fields\n", argv[3], argv[4], fc.nbFields);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  bool node_mode = argc >= 3 && std::strcmp(argv[2], "--node") == 0;
  if (argc != 2 && !node_mode) {
    std::fprintf(stderr, "usage: %s libdrconv_tensorrt.so [--node OP_TYPE PLUGIN_VERSION FIELD...]\n", argv[0]);
    return 2;
  }
  void* handle = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) {
    std::printf("FAIL dlopen: %s\n", dlerror());
    return 1;
  }
  using GetCreators = IPluginCreatorInterface* const* (*)(int32_t&);
  using SetLoggerFinder = void (*)(ILoggerFinder*);
  auto get_creators = reinterpret_cast<GetCreators>(dlsym(handle, "getCreators"));
  auto set_logger_finder = reinterpret_cast<SetLoggerFinder>(dlsym(handle, "setLoggerFinder"));
  expect(get_creators != nullptr && set_logger_finder != nullptr, "exports getCreators and setLoggerFinder");
  expect(dlsym(handle, "getPluginCreators") == nullptr, "no V2 entry point (getPluginCreators)");
  if (get_creators == nullptr || set_logger_finder == nullptr) return 1;

  CapturingLogger logger;
  Finder finder(&logger);
  set_logger_finder(&finder);

  int32_t count = 0;
  IPluginCreatorInterface* const* creators = get_creators(count);
  if (node_mode) {
    int status = create_from_node(creators, count, logger, argc, argv);
    set_logger_finder(nullptr);
    return status;
  }
  expect(count == 1 && creators != nullptr && creators[0] != nullptr, "one creator");
  InterfaceInfo info = creators[0]->getInterfaceInfo();
  expect(std::strcmp(info.kind, "PLUGIN CREATOR_V3ONE") == 0 && info.major == 1, "creator is an IPluginCreatorV3One");
  auto* creator = static_cast<IPluginCreatorV3One*>(creators[0]);
  expect(std::strcmp(creator->getPluginName(), "RegionConv2d") == 0, "creator name RegionConv2d");
  expect(std::strcmp(creator->getPluginVersion(), "1") == 0, "creator version 1");
  expect(std::strcmp(creator->getPluginNamespace(), "") == 0, "creator namespace empty");
  PluginFieldCollection const* names = creator->getFieldNames();
  bool names_ok = names != nullptr && names->nbFields == 3;
  char const* expected_names[3] = {"strides", "pads", "dilations"};
  int32_t expected_lengths[3] = {2, 4, 2};
  for (int i = 0; names_ok && i < 3; ++i)
    names_ok = std::strcmp(names->fields[i].name, expected_names[i]) == 0 &&
               names->fields[i].type == PluginFieldType::kINT32 && names->fields[i].length == expected_lengths[i];
  expect(names_ok, "fields strides[2], pads[4], dilations[2], kINT32");

  // Defaults when the node has no attributes: strides 1, pads 0, dilations 1.
  PluginFieldCollection empty{0, nullptr};
  PluginPtr defaults(creator->createPlugin("rc", &empty, TensorRTPhase::kBUILD));
  expect(defaults != nullptr, "createPlugin with no fields");
  if (defaults != nullptr)
    expect(serialized(defaults.get()) == std::vector<int64_t>{-1000, 1, 1, -1001, 0, 0, 0, 0, -1002, 1, 1},
           "no fields -> strides [1, 1], pads [0, 0, 0, 0], dilations [1, 1]");

  // What the ONNX parser passes: int32 fields plus plugin_version (a string).
  int32_t strides[2] = {2, 1}, pads[4] = {1, 2, 1, 2}, dilations[2] = {1, 3};
  char const version[] = "1";
  std::vector<PluginField> onnx_fields = {
      PluginField("strides", strides, PluginFieldType::kINT32, 2),
      PluginField("pads", pads, PluginFieldType::kINT32, 4),
      PluginField("dilations", dilations, PluginFieldType::kINT32, 2),
      PluginField("plugin_version", version, PluginFieldType::kCHAR, 1),
  };
  PluginFieldCollection onnx_fc = collection(onnx_fields);
  PluginPtr plugin(creator->createPlugin("rc", &onnx_fc, TensorRTPhase::kBUILD));
  expect(plugin != nullptr, "createPlugin with the ONNX parser's fields");
  if (plugin == nullptr) return 1;
  std::vector<int64_t> const want = {-1000, 2, 1, -1001, 1, 2, 1, 2, -1002, 1, 3};
  expect(serialized(plugin.get()) == want, "fields parsed into the plugin");

  // int64 fields are accepted too.
  int64_t strides64[2] = {2, 1};
  std::vector<PluginField> fields64 = {PluginField("strides", strides64, PluginFieldType::kINT64, 2)};
  PluginFieldCollection fc64 = collection(fields64);
  PluginPtr plugin64(creator->createPlugin("rc", &fc64, TensorRTPhase::kBUILD));
  expect(plugin64 != nullptr && serialized(plugin64.get())[1] == 2, "int64 fields accepted");

  // Invalid values: null plugin and a logged reason naming the field.
  struct Bad {
    char const* name;
    std::vector<int32_t> values;
    char const* reason;
  };
  std::vector<Bad> bad = {
      {"strides", {0, 1}, "strides must be >= 1"},
      {"strides", {1, 1, 1}, "strides must have 2 values"},
      {"dilations", {1, -1}, "dilations must be >= 1"},
      {"pads", {-1, 0, -1, 0}, "pads must be >= 0"},
      {"pads", {1, 1}, "pads must have 4 values"},
      {"pads", {1, 0, 2, 0}, "symmetric"},
  };
  for (Bad const& b : bad) {
    logger.errors.clear();
    std::vector<PluginField> f = {
        PluginField(b.name, b.values.data(), PluginFieldType::kINT32, static_cast<int32_t>(b.values.size()))};
    PluginFieldCollection fc = collection(f);
    PluginPtr refused(creator->createPlugin("rc", &fc, TensorRTPhase::kBUILD));
    bool logged = !logger.errors.empty() && logger.errors.back().find(b.reason) != std::string::npos;
    expect(refused == nullptr && logged, std::string("refuses ") + b.name + " (" + b.reason + ")");
  }
  float not_ints[2] = {1.f, 1.f};
  std::vector<PluginField> float_field = {PluginField("strides", not_ints, PluginFieldType::kFLOAT32, 2)};
  PluginFieldCollection float_fc = collection(float_field);
  PluginPtr refused_float(creator->createPlugin("rc", &float_fc, TensorRTPhase::kBUILD));
  expect(refused_float == nullptr, "refuses float strides");
  // filter_layout: OIHW (with or without the NUL) is the default; IHWO is refused with the way out.
  for (int32_t length : {4, 5}) {
    std::vector<PluginField> oihw = {PluginField("filter_layout", "OIHW", PluginFieldType::kCHAR, length)};
    PluginFieldCollection oihw_fc = collection(oihw);
    PluginPtr accepted_oihw(creator->createPlugin("rc", &oihw_fc, TensorRTPhase::kBUILD));
    expect(accepted_oihw != nullptr, "accepts filter_layout OIHW of length " + std::to_string(length));
  }
  logger.errors.clear();
  std::vector<PluginField> ihwo = {PluginField("filter_layout", "IHWO", PluginFieldType::kCHAR, 4)};
  PluginFieldCollection ihwo_fc = collection(ihwo);
  PluginPtr refused_ihwo(creator->createPlugin("rc", &ihwo_fc, TensorRTPhase::kBUILD));
  expect(refused_ihwo == nullptr && !logger.errors.empty() &&
             logger.errors.back().find("drconv build") != std::string::npos,
         "refuses filter_layout IHWO, naming drconv build");
  logger.errors.clear();
  std::vector<PluginField> relu = {PluginField("activation", "Relu", PluginFieldType::kCHAR, 4)};
  PluginFieldCollection relu_fc = collection(relu);
  PluginPtr refused_relu(creator->createPlugin("rc", &relu_fc, TensorRTPhase::kBUILD));
  expect(refused_relu == nullptr && !logger.errors.empty() &&
             logger.errors.back().find("drconv build") != std::string::npos,
         "refuses activation Relu, naming drconv build");

  // Build-time methods.
  auto* core = static_cast<IPluginV3OneCore*>(plugin->getCapabilityInterface(PluginCapabilityType::kCORE));
  auto* build = static_cast<IPluginV3OneBuild*>(plugin->getCapabilityInterface(PluginCapabilityType::kBUILD));
  auto* runtime = static_cast<IPluginV3OneRuntime*>(plugin->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
  expect(core != nullptr && build != nullptr && runtime != nullptr, "core, build and runtime capabilities");
  expect(std::strcmp(core->getPluginName(), "RegionConv2d") == 0 && std::strcmp(core->getPluginVersion(), "1") == 0,
         "plugin name and version");
  expect(std::strcmp(core->getInterfaceInfo().kind, "PLUGIN_V3ONE_CORE") == 0 &&
             std::strcmp(build->getInterfaceInfo().kind, "PLUGIN_V3ONE_BUILD") == 0 &&
             std::strcmp(runtime->getInterfaceInfo().kind, "PLUGIN_V3ONE_RUNTIME") == 0,
         "capability interface kinds");
  expect(build->getNbOutputs() == 1, "one output");
  for (DataType type : {DataType::kFLOAT, DataType::kHALF}) {
    DataType in[3] = {type, type, type}, out[1] = {DataType::kINT8};
    expect(build->getOutputDataTypes(out, 1, in, 3) == 0 && out[0] == type,
           std::string("output type follows input: ") + (type == DataType::kFLOAT ? "float" : "half"));
  }
  DynamicPluginTensorDesc all_float[4] = {desc(DataType::kFLOAT, TensorFormat::kLINEAR),
                                          desc(DataType::kFLOAT, TensorFormat::kLINEAR),
                                          desc(DataType::kFLOAT, TensorFormat::kLINEAR),
                                          desc(DataType::kFLOAT, TensorFormat::kLINEAR)};
  bool accepted = true;
  for (int32_t pos = 0; pos < 4; ++pos) accepted = accepted && build->supportsFormatCombination(pos, all_float, 3, 1);
  expect(accepted, "accepts float, linear, at every position");
  DynamicPluginTensorDesc all_half[4] = {desc(DataType::kHALF, TensorFormat::kLINEAR),
                                         desc(DataType::kHALF, TensorFormat::kLINEAR),
                                         desc(DataType::kHALF, TensorFormat::kLINEAR),
                                         desc(DataType::kHALF, TensorFormat::kLINEAR)};
  accepted = true;
  for (int32_t pos = 0; pos < 4; ++pos) accepted = accepted && build->supportsFormatCombination(pos, all_half, 3, 1);
  expect(accepted, "accepts half, linear, at every position");
  DynamicPluginTensorDesc mixed[4] = {all_float[0], desc(DataType::kHALF, TensorFormat::kLINEAR), all_float[2],
                                      all_float[3]};
  expect(!build->supportsFormatCombination(1, mixed, 3, 1), "refuses filters of another type than X");
  DynamicPluginTensorDesc int8[4] = {desc(DataType::kINT8, TensorFormat::kLINEAR), all_float[1], all_float[2],
                                     all_float[3]};
  expect(!build->supportsFormatCombination(0, int8, 3, 1), "refuses int8");
  DynamicPluginTensorDesc chw32[4] = {desc(DataType::kFLOAT, TensorFormat::kCHW32), all_float[1], all_float[2],
                                      all_float[3]};
  expect(!build->supportsFormatCombination(0, chw32, 3, 1), "refuses a non-linear format");
  expect(!build->supportsFormatCombination(4, all_float, 3, 1), "refuses a position past the output");
  expect(build->configurePlugin(all_float, 3, all_float + 3, 1) == 0, "configurePlugin with 3 inputs, 1 output");
  {  // a profile whose largest shape has more regions than the CUDA kernel takes: refused at build, with the reason
    DynamicPluginTensorDesc many[4] = {all_float[0], all_float[1], all_float[2], all_float[3]};
    many[0].max = Dims{4, {1, 2, 9, 10}};
    many[1].max = Dims{6, {1, 5000, 2, 2, 3, 3}};
    many[2].max = Dims{4, {1, 5000, 5, 8}};  // strides (2, 1), pads (1, 2), dilations (1, 3): 5 x 8
    logger.errors.clear();
    expect(build->configurePlugin(many, 3, many + 3, 1) != 0 && !logger.errors.empty() &&
               logger.errors.back().find("at most 4096 regions") != std::string::npos,
           "configurePlugin refuses a profile past the kernel's region limit, with a reason");
    many[1].max.d[1] = many[2].max.d[1] = 16;
    expect(build->configurePlugin(many, 3, many + 3, 1) == 0, "configurePlugin accepts the same profile at R=16");
  }
  // Scratch for the largest shape of the profile: two [N, R] int tables and two [N, P] int
  // lists, each rounded up to 256 bytes (N=2, R=4, P=5x8=40: 256 + 256 + 512 + 512).
  DynamicPluginTensorDesc sized[4] = {all_float[0], all_float[1], all_float[2], all_float[3]};
  sized[0].max = Dims{4, {2, 3, 9, 10}};
  sized[1].max = Dims{6, {2, 4, 5, 3, 3, 3}};
  sized[2].max = Dims{4, {2, 4, 5, 8}};
  expect(build->getWorkspaceSize(sized, 3, sized + 3, 1) == 1536, "workspace sized from the profile's maxima");

  // onShapeChange validates the runtime shapes, without a GPU.
  PluginTensorDesc shapes[3] = {};
  shapes[0].dims = Dims{4, {2, 3, 9, 10}};
  shapes[1].dims = Dims{6, {2, 4, 5, 3, 3, 3}};
  shapes[2].dims = Dims{4, {2, 4, 5, 8}};  // strides (2, 1), pads (1, 2), dilations (1, 3): 5 x 8
  for (PluginTensorDesc& d : shapes) d.type = DataType::kFLOAT;
  expect(runtime->onShapeChange(shapes, 3, shapes, 1) == 0, "onShapeChange accepts matching shapes");
  shapes[2].dims.d[3] = 10;
  logger.errors.clear();
  expect(runtime->onShapeChange(shapes, 3, shapes, 1) != 0 && !logger.errors.empty() &&
             logger.errors.back().find("guide must be 5x8") != std::string::npos,
         "onShapeChange refuses a guide of the wrong size, with a reason");

  // Serialization round trip and clone.
  PluginPtr restored(creator->createPlugin("rc", runtime->getFieldsToSerialize(), TensorRTPhase::kRUNTIME));
  expect(restored != nullptr && serialized(restored.get()) == want, "serialize -> runtime createPlugin round trip");
  PluginPtr cloned(plugin->clone());
  expect(cloned != nullptr && serialized(cloned.get()) == want, "clone keeps the fields");
  plugin.reset();  // the clone must not point into the original
  expect(cloned != nullptr && serialized(cloned.get()) == want, "clone outlives the original");
  PluginPtr attached(runtime == nullptr ? nullptr : cloned->clone());
  expect(attached != nullptr, "attachToContext-style clone");

  set_logger_finder(nullptr);
  std::printf("%d passed, %d failed\n", checks - failures, failures);
  return failures == 0 ? 0 : 1;
}
