// Prints region_conv_contract.h's table as JSON, in the shape of drconv.contract.table(), for
// tests/test_contract.py to compare; then the messages for version argv[1] and a mixture that
// has both its coefficients and its routing.
#include <cstdio>
#include <cstdlib>
#include <string>

#include "region_conv_contract.h"

namespace c = drconv::contract;

namespace {

std::string quoted(const std::string& s) { return "\"" + s + "\""; }

template <typename T, size_t N>
std::string ints(const T (&values)[N]) {
  std::string s = "[";
  for (size_t i = 0; i < N; ++i) s += (i ? ", " : "") + std::to_string(values[i]);
  return s + "]";
}

std::string node(const c::NodeType& t) {
  std::string names = "[", required = "[", since = "[";
  for (size_t i = 0; i < t.inputs; ++i) {
    const char* sep = i ? ", " : "";
    names += sep + quoted(t.names[i]);
    required += sep + std::string(t.required[i] ? "true" : "false");
    since += sep + std::to_string(t.input_since[i]);
  }
  return "{\"name\": " + quoted(t.name) + ", \"since\": " + std::to_string(t.since) + ", \"inputs\": " + names +
         "], \"required\": " + required + "], \"input_since\": " + since + "], \"min_inputs\": " +
         std::to_string(t.min_inputs()) + "}";
}

}  // namespace

int main(int argc, char** argv) {
  const long long version = argc > 1 ? std::atoll(argv[1]) : 0;
  const char* names[] = {c::kStrides, c::kPads,       c::kDilations,    c::kFilterLayout,
                         c::kActivation, c::kXChannelBlock, c::kYChannelBlock};
  std::string since = "{";
  for (size_t i = 0; i < 7; ++i) since += (i ? ", " : "") + quoted(names[i]) + ": " + std::to_string(c::kAttributesSince[i]);
  std::printf(
      "{\"domain\": %s, \"first_version\": %lld, \"latest_version\": %lld, \"plugin_version\": %s,\n"
      " \"nodes\": [%s, %s],\n"
      " \"attributes\": {%s: %s, %s: %s, %s: %s, %s: %s, %s: %s, %s: %lld, %s: %lld},\n"
      " \"attributes_since\": %s},\n"
      " \"channel_blocks\": %s,\n"
      " \"version_error\": %s, \"both_error\": %s, \"neither_error\": %s, \"bias_error\": %s}\n",
      quoted(c::kDomain).c_str(), static_cast<long long>(c::kFirstVersion), static_cast<long long>(c::kLatestVersion),
      quoted(c::kPluginVersion).c_str(), node(c::kRegionConv).c_str(), node(c::kMixture).c_str(),
      quoted(c::kStrides).c_str(), ints(c::kDefaultStrides).c_str(), quoted(c::kPads).c_str(),
      ints(c::kDefaultPads).c_str(), quoted(c::kDilations).c_str(), ints(c::kDefaultDilations).c_str(),
      quoted(c::kFilterLayout).c_str(), quoted(c::kDefaultFilterLayout).c_str(), quoted(c::kActivation).c_str(),
      quoted(c::kDefaultActivation).c_str(), quoted(c::kXChannelBlock).c_str(),
      static_cast<long long>(c::kDefaultChannelBlock), quoted(c::kYChannelBlock).c_str(),
      static_cast<long long>(c::kDefaultChannelBlock), since.c_str(), ints(c::kChannelBlocks).c_str(), quoted(c::version_error(version)).c_str(),
      quoted(c::mixture_inputs_error(true, true, false)).c_str(),
      quoted(c::mixture_inputs_error(false, false, false)).c_str(),
      quoted(c::mixture_inputs_error(true, false, true)).c_str());
  return 0;
}
