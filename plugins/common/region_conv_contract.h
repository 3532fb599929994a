// The node contract of drconv's ONNX nodes, the C++ side: domain, names, versions, input
// positions, which inputs may be left out, attribute names and defaults, the TensorRT plugin
// version, and the messages for a version or an input combination no backend may run.
// drconv/contract.py holds the same table for Python; tests/test_contract.py compiles this
// header and checks that the two agree entry by entry. docs/region_conv_op.md describes it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace drconv::contract {

inline constexpr char kDomain[] = "drconv";
// The versions of the drconv domain this build implements: every node of every version
// from kFirstVersion to kLatestVersion. What each added:
//   1 RegionConv2d: X, filters [N, R, C_out, C_in, kh, kw], guide; strides, pads, dilations
//   2 RegionConv2d: filter_layout (IHWO), bias input B, activation (Relu)
//   3 MixtureRegionConv2d: filters mixed in the node from coefficients and a basis
//   4 MixtureRegionConv2d: inputs routing and routing_bias (the node routes itself)
//   5 both: x_channel_block, y_channel_block (X, Y in ONNX Runtime's blocked NCHWc layout;
//     drconv's ONNX Runtime session writes them into its optimised graph, exports never do)
inline constexpr int64_t kFirstVersion = 1;
inline constexpr int64_t kLatestVersion = 5;
inline constexpr char kPluginVersion[] = "1";  // the TensorRT plugin: version 1 of RegionConv2d

struct NodeType {
  const char* name;
  int64_t since;              // the first domain version with this node
  size_t inputs;              // how many inputs the latest version has
  const char* const* names;   // their names, in order
  const bool* required;       // which must be present
  const int64_t* input_since; // the version that added each input

  // The fewest inputs a node may list: up to its last required one.
  constexpr size_t min_inputs() const {
    size_t n = 0;
    for (size_t i = 0; i < inputs; ++i)
      if (required[i]) n = i + 1;
    return n;
  }
};

// RegionConv2d's inputs.
enum RegionConvInput : size_t { kX = 0, kFilters = 1, kGuide = 2, kBias = 3, kRegionConvInputs = 4 };
inline constexpr const char* kRegionConvInputNames[kRegionConvInputs] = {"X", "filters", "guide", "B"};
inline constexpr bool kRegionConvRequired[kRegionConvInputs] = {true, true, true, false};
inline constexpr int64_t kRegionConvInputSince[kRegionConvInputs] = {1, 1, 1, 2};

// MixtureRegionConv2d's inputs: the coefficients are left out where the routing computes them.
enum MixtureInput : size_t {
  kMixtureX = 0,
  kCoefficients = 1,
  kBasis = 2,
  kMixtureGuide = 3,
  kMixtureBias = 4,
  kRouting = 5,
  kRoutingBias = 6,
  kMixtureInputs = 7,
};
inline constexpr const char* kMixtureInputNames[kMixtureInputs] = {"X",  "coefficients", "basis",       "guide",
                                                                   "B",  "routing",      "routing_bias"};
inline constexpr bool kMixtureRequired[kMixtureInputs] = {true, false, true, true, false, false, false};
inline constexpr int64_t kMixtureInputSince[kMixtureInputs] = {3, 3, 3, 3, 3, 4, 4};

inline constexpr NodeType kRegionConv{"RegionConv2d", 1, kRegionConvInputs, kRegionConvInputNames,
                                      kRegionConvRequired, kRegionConvInputSince};
inline constexpr NodeType kMixture{"MixtureRegionConv2d", 3, kMixtureInputs, kMixtureInputNames, kMixtureRequired,
                                   kMixtureInputSince};
inline constexpr const NodeType* kNodeTypes[] = {&kRegionConv, &kMixture};

// How many inputs a node of `type` has at `version` of the domain (inputs are only ever added
// at the end): RegionConv2d version 1, which the TensorRT plugin implements, has 3.
constexpr size_t inputs_at(const NodeType& type, int64_t version) {
  size_t n = 0;
  while (n < type.inputs && type.input_since[n] <= version) ++n;
  return n;
}

// Attribute names and defaults (both node types; absent attributes take these).
inline constexpr char kStrides[] = "strides";
inline constexpr char kPads[] = "pads";
inline constexpr char kDilations[] = "dilations";
inline constexpr char kFilterLayout[] = "filter_layout";
inline constexpr char kActivation[] = "activation";
inline constexpr char kXChannelBlock[] = "x_channel_block";
inline constexpr char kYChannelBlock[] = "y_channel_block";
inline constexpr int64_t kDefaultStrides[] = {1, 1};
inline constexpr int64_t kDefaultPads[] = {0, 0, 0, 0};  // top, left, bottom, right
inline constexpr int64_t kDefaultDilations[] = {1, 1};
inline constexpr char kDefaultFilterLayout[] = "OIHW";
inline constexpr char kDefaultActivation[] = "";
inline constexpr int64_t kDefaultChannelBlock = 0;  // NCHW; B: NCHWc (CPU, float32, IHWO, pads 0)
inline constexpr int64_t kAttributesSince[] = {1, 1, 1, 2, 2, 5, 5};  // in the order above
// The NCHWc blocks the CPU kernel reads and writes (ONNX Runtime's MLAS: 16 with AVX-512, 8 with AVX2).
inline constexpr int64_t kChannelBlocks[] = {4, 8, 16};

// Empty where `version` of the domain is implemented here, else the one line every backend
// gives (drconv.contract.version_error writes the same).
inline std::string version_error(int64_t version) {
  if (version >= kFirstVersion && version <= kLatestVersion) return {};
  return std::string("the model imports the ") + kDomain + " domain at version " + std::to_string(version) +
         ", and this drconv implements versions " + std::to_string(kFirstVersion) + " to " +
         std::to_string(kLatestVersion) + ": export it again with this drconv, or upgrade drconv";
}

// Empty where a MixtureRegionConv2d's inputs are a valid combination: its coefficients as an
// input or from its routing (version 4), never both, and routing_bias only with routing.
inline std::string mixture_inputs_error(bool coefficients, bool routing, bool routing_bias) {
  if (routing && coefficients) return "MixtureRegionConv2d: give the coefficients or the routing, not both";
  if (!routing && !coefficients)
    return "MixtureRegionConv2d: input coefficients is missing (and the node has no routing)";
  if (routing_bias && !routing) return "MixtureRegionConv2d: input routing_bias needs the routing input";
  return {};
}

}  // namespace drconv::contract
