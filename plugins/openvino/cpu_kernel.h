// What the extension's operations share: their attributes in OpenVINO IR, OpenVINO's threads
// for the CPU kernel, shapes as the node checks read them, and one call of the kernel with its
// own workspace.
#pragma once

#include <openvino/core/attribute_visitor.hpp>
#include <openvino/core/parallel.hpp>
#include <openvino/runtime/tensor.hpp>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "region_conv_cpu.h"
#include "region_conv_node.h"

namespace drconv::openvino {

// fn(i) for i in [0, count) on OpenVINO's own threads: ov::parallel_for splits the range over
// the TBB arena of the inference stream that runs the node, so the kernel adds no threads of
// its own and uses as many as the stream has (INFERENCE_NUM_THREADS, or streams' share).
struct OvParallelFor {
  template <typename Fn>
  void operator()(int64_t count, const Fn& fn) const {
    if (count <= 0) return;
    ov::parallel_for(static_cast<size_t>(count), [&](size_t i) { fn(static_cast<int64_t>(i)); });
  }
};

// The node's attributes (docs/region_conv_op.md), as OpenVINO IR reads and writes them.
inline void visit_node_attributes(ov::AttributeVisitor& visitor, RegionConvAttrs& attrs, std::string& plugin_version) {
  visitor.on_attribute("strides", attrs.strides);
  visitor.on_attribute("pads", attrs.pads);
  visitor.on_attribute("dilations", attrs.dilations);
  visitor.on_attribute("filter_layout", attrs.filter_layout);
  visitor.on_attribute("activation", attrs.activation);
  visitor.on_attribute("plugin_version", plugin_version);
}

inline std::vector<int64_t> dims_of(const ov::Shape& shape) { return {shape.begin(), shape.end()}; }

// Every input's dims, in the node's order.
using NodeDims = std::vector<std::vector<int64_t>>;

inline InputDims input_dims(const NodeDims& dims, size_t i) { return {dims[i].data(), dims[i].size()}; }

// The node's inputs' dims where all are static (validate_and_infer_types then checks every
// rule); false where any is not yet known.
inline bool static_dims(const ov::Node& node, NodeDims& dims) {
  dims.clear();
  for (size_t i = 0; i < node.get_input_size(); ++i) {
    if (!node.get_input_partial_shape(i).is_static()) return false;
    dims.push_back(dims_of(node.get_input_partial_shape(i).to_shape()));
  }
  return true;
}

// The dims of the tensors `evaluate` got, each checked to be float32 (what the kernel runs).
inline NodeDims float_tensor_dims(const char* op, const ov::TensorVector& inputs) {
  NodeDims dims;
  for (size_t i = 0; i < inputs.size(); ++i) {
    OPENVINO_ASSERT(inputs[i].get_element_type() == ov::element::f32, op, ": input ", i, " is ",
                    inputs[i].get_element_type(), "; the OpenVINO extension runs float32");
    dims.push_back(dims_of(inputs[i].get_shape()));
  }
  return dims;
}

inline const float* floats(const ov::Tensor& tensor) { return static_cast<const float*>(tensor.data()); }

// Y [N, C_out, H_out, W_out] of `shape` into `y`, by the float32 kernel on OpenVINO's threads.
// `filters` null for a mixture (`mixture` then says how they are made).
inline void run_kernel(const float* x, const float* filters, const float* guide, ov::Tensor& y,
                       const RegionConvShape& shape, const direct::Epilogue& epilogue,
                       const Mixture* mixture = nullptr) {
  y.set_shape(ov::Shape{static_cast<size_t>(shape.n), static_cast<size_t>(shape.c_out),
                        static_cast<size_t>(shape.h_out()), static_cast<size_t>(shape.w_out())});
  const int64_t workers = std::max(1, parallel_get_max_threads());
  // The workspace is the call's own (OpenVINO may run one node from several infer requests at
  // once), and uninitialised: the kernel writes before it reads (zero-filling cost 5-15%).
  const auto bytes =
      static_cast<size_t>(region_conv_workspace_size<float>(shape, workers, mixture ? mixture->bases : 0));
  const std::unique_ptr<char[]> workspace(new char[bytes + 64]);
  void* aligned = workspace.get() + (64 - reinterpret_cast<uintptr_t>(workspace.get()) % 64) % 64;
  region_conv_forward_f32(x, filters, guide, static_cast<float*>(y.data()), shape, OvParallelFor{}, workers, aligned,
                          epilogue, mixture);
}

}  // namespace drconv::openvino
