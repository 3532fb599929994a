// Small helpers over the ONNX Runtime C API (version 21, the oldest we support).
// We use the C API directly: the C++ wrapper keeps the API table in a global, and this
// library keeps no global state; each op and kernel carries the table it was given.
#pragma once

#include <onnxruntime_c_api.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace drconv::ort {

constexpr uint32_t kApiVersion = 21;

// Turns the status of an API call into an early return of that status.
#define DRCONV_ORT_RETURN_IF_ERROR(expr) \
  do {                                   \
    OrtStatus* _status = (expr);         \
    if (_status != nullptr) return _status; \
  } while (0)

struct TensorInfo {
  ONNXTensorElementDataType type = ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
  std::vector<int64_t> dims;
};

inline OrtStatus* tensor_info(const OrtApi& api, const OrtValue* value, TensorInfo& out) {
  OrtTensorTypeAndShapeInfo* info = nullptr;
  DRCONV_ORT_RETURN_IF_ERROR(api.GetTensorTypeAndShape(value, &info));
  size_t rank = 0;
  OrtStatus* status = api.GetTensorElementType(info, &out.type);
  if (status == nullptr) status = api.GetDimensionsCount(info, &rank);
  if (status == nullptr) {
    out.dims.resize(rank);
    status = api.GetDimensions(info, out.dims.data(), rank);
  }
  api.ReleaseTensorTypeAndShapeInfo(info);
  return status;
}

// Whether a failed attribute query failed because the node lacks the attribute: ONNX
// Runtime says ORT_FAIL both for that and for another type, and only the message tells
// them apart. Releases the status.
inline bool absent(const OrtApi& api, OrtStatus* status) {
  const bool missing = std::strncmp(api.GetErrorMessage(status), "No attribute", 12) == 0;
  api.ReleaseStatus(status);
  return missing;
}

// The error for an attribute of another type than the node's contract says (`kind`).
inline OrtStatus* mistyped(const OrtApi& api, const char* name, const char* kind) {
  return api.CreateStatus(ORT_INVALID_ARGUMENT,
                          (std::string("RegionConv2d: attribute ") + name + " must be " + kind).c_str());
}

// An int64 list attribute, or `value` unchanged when the node does not have it. A node
// whose attribute has another type gets an error naming it, not the default or a
// misleading count: ONNX Runtime reads a FLOATS attribute as an empty INTS one.
inline OrtStatus* ints_attribute(const OrtApi& api, const OrtKernelInfo* info, const char* name,
                                 std::vector<int64_t>& value) {
  size_t size = 0;
  OrtStatus* status = api.KernelInfoGetAttributeArray_int64(info, name, nullptr, &size);
  if (status != nullptr) return absent(api, status) ? nullptr : mistyped(api, name, "ints");
  if (size == 0) {
    size_t floats = 0;
    status = api.KernelInfoGetAttributeArray_float(info, name, nullptr, &floats);
    if (status != nullptr) api.ReleaseStatus(status);
    if (status == nullptr && floats > 0) return mistyped(api, name, "ints");
  }
  value.resize(size);
  return api.KernelInfoGetAttributeArray_int64(info, name, value.data(), &size);
}

// An int64 attribute, or `value` unchanged when the node does not have it.
inline OrtStatus* int_attribute(const OrtApi& api, const OrtKernelInfo* info, const char* name, int64_t& value) {
  int64_t read = 0;
  OrtStatus* status = api.KernelInfoGetAttribute_int64(info, name, &read);
  if (status != nullptr) return absent(api, status) ? nullptr : mistyped(api, name, "an int");
  value = read;
  return nullptr;
}

// A string attribute, or `value` unchanged when the node does not have it. A node whose
// attribute has another type gets ONNX Runtime's error, not the default.
inline OrtStatus* string_attribute(const OrtApi& api, const OrtKernelInfo* info, const char* name,
                                   std::string& value) {
  size_t size = 0;
  OrtStatus* status = api.KernelInfoGetAttribute_string(info, name, nullptr, &size);
  if (status != nullptr) return absent(api, status) ? nullptr : mistyped(api, name, "a string");
  std::string text(size, '\0');  // size counts the terminating NUL
  status = api.KernelInfoGetAttribute_string(info, name, text.data(), &size);
  if (status != nullptr) return status;
  text.resize(size > 0 ? size - 1 : 0);
  value = text;
  return nullptr;
}

inline const char* type_name(ONNXTensorElementDataType type) {
  switch (type) {
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT:
      return "float32";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16:
      return "float16";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE:
      return "float64";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16:
      return "bfloat16";
    default:
      return "a non-float type";
  }
}

// Scratch memory from one of the session's allocators (an arena: no page faults or
// cudaMalloc per call), 256-byte aligned, released on every path out of a compute call.
// On CUDA the release only returns the block to the arena, and everything the session
// enqueues runs on the same stream after this kernel, so freeing before the kernel
// finishes is safe (as ORT's own CUDA kernels do).
class Scratch {
 public:
  explicit Scratch(const OrtApi& api) : api_(api) {}
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  ~Scratch() {
    if (data_ != nullptr) release(api_.AllocatorFree(allocator_, data_));
    if (allocator_ != nullptr) api_.ReleaseAllocator(allocator_);
  }

  OrtStatus* allocate(OrtKernelContext* context, const OrtMemoryInfo* memory, int64_t bytes) {
    DRCONV_ORT_RETURN_IF_ERROR(api_.KernelContext_GetAllocator(context, memory, &allocator_));
    return api_.AllocatorAlloc(allocator_, static_cast<size_t>(bytes) + kAlign, &data_);
  }

  void* aligned() const {
    return reinterpret_cast<void*>((reinterpret_cast<uintptr_t>(data_) + kAlign - 1) / kAlign * kAlign);
  }

 private:
  static constexpr uintptr_t kAlign = 256;

  void release(OrtStatus* status) const {
    if (status != nullptr) api_.ReleaseStatus(status);
  }

  const OrtApi& api_;
  OrtAllocator* allocator_ = nullptr;
  void* data_ = nullptr;
};

}  // namespace drconv::ort
