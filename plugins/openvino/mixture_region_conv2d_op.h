// drconv::MixtureRegionConv2d as an OpenVINO operation: the filters mixed inside the CPU
// kernel from coefficients (or the node's own routing of X) and a basis, never written out
// (docs/region_conv_op.md), checked by the same rules as the ONNX Runtime library.
#pragma once

#include <memory>
#include <string>

#include <openvino/op/op.hpp>

#include "cpu_kernel.h"

namespace drconv::openvino {

class MixtureRegionConv2d : public ov::op::Op {
 public:
  OPENVINO_OP("MixtureRegionConv2d", "drconv")

  // Which optional inputs the node has; the inputs are X, the coefficients (or with `routed`
  // the routing), basis, guide, then B with `bias`, then routing_bias with `routing_bias`.
  struct Inputs {
    bool routed = false, bias = false, routing_bias = false;
  };

  MixtureRegionConv2d() = default;
  MixtureRegionConv2d(const ov::OutputVector& inputs, RegionConvAttrs attrs, Inputs which);

  void validate_and_infer_types() override;
  std::shared_ptr<ov::Node> clone_with_new_inputs(const ov::OutputVector& inputs) const override;
  bool visit_attributes(ov::AttributeVisitor& visitor) override;
  bool evaluate(ov::TensorVector& outputs, const ov::TensorVector& inputs) const override;
  bool has_evaluate() const override;

 private:
  // The shape from the inputs' dims (in the operation's order), or a message.
  std::string shape_of(const NodeDims& dims, RegionConvShape& shape) const;

  RegionConvAttrs attrs_;
  Inputs which_;
  std::string plugin_version_ = "1";
};

}  // namespace drconv::openvino
