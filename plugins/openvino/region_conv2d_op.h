// drconv::RegionConv2d as an OpenVINO operation (ov::op::Op): the node of
// docs/region_conv_op.md, checked by the same rules as the other backends
// (common/region_conv_node.h) and run by the shared CPU kernel (common/region_conv_cpu.h).
#pragma once

#include <memory>
#include <string>

#include <openvino/op/op.hpp>

#include "cpu_kernel.h"

namespace drconv::openvino {

class RegionConv2d : public ov::op::Op {
 public:
  // Type name and "opset": how OpenVINO IR (ov::save_model) names the operation.
  OPENVINO_OP("RegionConv2d", "drconv")

  RegionConv2d() = default;
  // inputs: X, filters, guide, and optionally B (docs/region_conv_op.md).
  RegionConv2d(const ov::OutputVector& inputs, RegionConvAttrs attrs);

  void validate_and_infer_types() override;
  std::shared_ptr<ov::Node> clone_with_new_inputs(const ov::OutputVector& inputs) const override;
  bool visit_attributes(ov::AttributeVisitor& visitor) override;
  bool evaluate(ov::TensorVector& outputs, const ov::TensorVector& inputs) const override;
  bool has_evaluate() const override;

 private:
  // The shape from the inputs' dims, or a message.
  std::string shape_of(const NodeDims& dims, RegionConvShape& shape) const;

  RegionConvAttrs attrs_;
  std::string plugin_version_ = "1";
};

}  // namespace drconv::openvino
