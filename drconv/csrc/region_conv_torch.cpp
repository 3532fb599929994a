// The drconv::region_conv op's C++ kernels, registered with the dispatcher
// (TORCH_LIBRARY_IMPL): the shared CPU kernel (plugins/common/region_conv_cpu.h) on
// ATen's intra-op pool, and the op's autograd. drconv/ops.py declares the op, its fake
// implementation and the torch-ops kernel other devices run; its backward stays the
// drconv::region_conv_backward op. With both kernels in C++ an eager call from Python
// is one dispatcher call, with no Python between it and the kernel.
// Torch's headers are not -Wextra clean; keep the warnings for our own code only.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-parameter"
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/csrc/utils/pybind.h>
#include <torch/library.h>
#pragma GCC diagnostic pop

#include <tuple>

#include "region_conv_checks.h"
#include "region_conv_cpu.h"

namespace {

struct AtenGemm {
  template <typename T>
  void operator()(int64_t m, int64_t n, int64_t k, const T* a, const T* b, T* c) const {
    const auto options = at::TensorOptions().dtype(c10::CppTypeToScalarType<T>::value);
    at::Tensor out = at::from_blob(c, {m, n}, options);
    at::mm_out(out, at::from_blob(const_cast<T*>(a), {m, k}, options),
               at::from_blob(const_cast<T*>(b), {n, k}, options).t());
  }
};

struct AtenParallelFor {
  template <typename F>
  void operator()(int64_t count, const F& fn) const {
    at::parallel_for(0, count, 1, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) fn(i);
    });
  }
};

// filters [N, R, C_out, C_in, kh, kw] as the kernel reads them: as they are when their
// memory is OIHW (contiguous) or IHWO (a permuted view of a contiguous [N, R, C_in, kh, kw,
// C_out] tensor, which drconv's modules hand over in inference: the kernel then packs
// nothing, docs/region_conv_op.md), else copied to OIHW. Sets `layout` to match.
at::Tensor filters_in_kernel_layout(const at::Tensor& filters, drconv::FilterLayout& layout) {
  if (!filters.is_contiguous()) {
    const at::Tensor ihwo = filters.permute({0, 1, 3, 4, 5, 2});
    if (ihwo.is_contiguous()) {
      layout = drconv::FilterLayout::kIHWO;
      return ihwo;
    }
  }
  layout = drconv::FilterLayout::kOIHW;
  return filters.contiguous();
}

// The CPU kernel (dispatch key CPU). float16 and bfloat16 run in float32: the kernel has
// no half-precision arithmetic, and rounding once at the end is closer to the exact result.
at::Tensor region_conv_cpu(const at::Tensor& x, const at::Tensor& filters, const at::Tensor& guide,
                           at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation) {
  drconv::RegionConvShape s = drconv::checked_shape(x, filters, guide, stride, padding, dilation);
  if (x.scalar_type() != at::kFloat && x.scalar_type() != at::kDouble)
    return region_conv_cpu(x.to(at::kFloat), filters.to(at::kFloat), guide.to(at::kFloat), stride, padding, dilation)
        .to(x.scalar_type());
  const at::Tensor xc = x.contiguous(), gc = guide.contiguous();
  const at::Tensor fc = filters_in_kernel_layout(filters, s.layout);
  at::Tensor y = at::empty({s.n, s.c_out, s.h_out(), s.w_out()}, x.options());
  const int64_t workers = at::get_num_threads();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "region_conv_cpu", [&] {
    // One block, so that the allocator can hand the same memory back call after call.
    at::Tensor workspace = at::empty({drconv::region_conv_workspace_size<scalar_t>(s, workers)},
                                     x.options().dtype(at::kByte));
    drconv::region_conv_forward<scalar_t>(xc.data_ptr<scalar_t>(), fc.data_ptr<scalar_t>(), gc.data_ptr<scalar_t>(),
                                          y.data_ptr<scalar_t>(), s, AtenGemm{}, AtenParallelFor{}, workers,
                                          workspace.data_ptr());
  });
  return y;
}

// The op's kernel for these inputs' device, below the autograd key.
at::Tensor call_below_autograd(const at::Tensor& x, const at::Tensor& filters, const at::Tensor& guide,
                               at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation) {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("drconv::region_conv", "")
                             .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, at::IntArrayRef,
                                               at::IntArrayRef, at::IntArrayRef)>();
  const at::AutoDispatchBelowADInplaceOrView below_autograd;
  return op.call(x, filters, guide, stride, padding, dilation);
}

using Tensors3 = std::tuple<at::Tensor, at::Tensor, at::Tensor>;

// drconv::region_conv_backward (declared and implemented in drconv/ops.py).
Tensors3 call_backward(const at::Tensor& grad_y, const torch::autograd::variable_list& saved,
                       const torch::autograd::AutogradContext& ctx, bool need_x, bool need_filters, bool need_guide) {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("drconv::region_conv_backward", "")
                             .typed<Tensors3(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                             const at::Tensor&, c10::SymIntArrayRef, c10::SymIntArrayRef,
                                             c10::SymIntArrayRef, bool, bool, bool)>();
  auto sym = [&](const char* key) { return ctx.saved_data.at(key).toSymIntVector(); };
  return op.call(grad_y, saved[0], saved[1], saved[2], sym("stride"), sym("padding"), sym("dilation"), need_x,
                 need_filters, need_guide);
}

class RegionConvFunction : public torch::autograd::Function<RegionConvFunction> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, const at::Tensor& filters,
                            const at::Tensor& guide, at::IntArrayRef stride, at::IntArrayRef padding,
                            at::IntArrayRef dilation) {
    ctx->save_for_backward({x, filters, guide});
    ctx->saved_data["stride"] = c10::fromIntArrayRefSlow(stride);
    ctx->saved_data["padding"] = c10::fromIntArrayRefSlow(padding);
    ctx->saved_data["dilation"] = c10::fromIntArrayRefSlow(dilation);
    return call_below_autograd(x, filters, guide, stride, padding, dilation);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const bool need_x = ctx->needs_input_grad(0), need_filters = ctx->needs_input_grad(1),
               need_guide = ctx->needs_input_grad(2);
    auto [gx, gf, gg] = call_backward(grads[0], ctx->get_saved_variables(), *ctx, need_x, need_filters, need_guide);
    // The backward op returns an empty tensor for a gradient not asked for.
    return {need_x ? gx : at::Tensor(), need_filters ? gf : at::Tensor(), need_guide ? gg : at::Tensor(),
            at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

at::Tensor region_conv_autograd(const at::Tensor& x, const at::Tensor& filters, const at::Tensor& guide,
                                at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation) {
  // Inference (no_grad, or no input needing a gradient) builds no graph node, as ATen's own
  // autograd kernels do.
  if (!at::GradMode::is_enabled() || !(x.requires_grad() || filters.requires_grad() || guide.requires_grad()))
    return call_below_autograd(x, filters, guide, stride, padding, dilation);
  return RegionConvFunction::apply(x, filters, guide, stride, padding, dilation);
}

// drconv::mixture_region_conv: region_conv with filters[n, r] = sum over m of
// coefficients[n, r, m] * basis[m], the basis IHWO [M, C_in, kh, kw, C_out]. The filters as
// region_conv takes them: an OIHW view of IHWO memory.
at::Tensor mixed_filters(const at::Tensor& coefficients, const at::Tensor& basis) {
  const at::Tensor ihwo = at::matmul(coefficients, basis.reshape({basis.size(0), -1}));  // [N, R, C_in*kh*kw*C_out]
  return ihwo.view({coefficients.size(0), coefficients.size(1), basis.size(1), basis.size(2), basis.size(3),
                    basis.size(4)})
      .permute({0, 1, 5, 2, 3, 4});
}

void check_mixture(const at::Tensor& coefficients, const at::Tensor& basis) {
  TORCH_CHECK_VALUE(coefficients.dim() == 3, "coefficients must be 3-D [N, R, M], got shape ",
                    drconv::tuple_str(coefficients.sizes()));
  TORCH_CHECK_VALUE(basis.dim() == 5, "basis must be 5-D [M, C_in, kh, kw, C_out], got shape ",
                    drconv::tuple_str(basis.sizes()));
  TORCH_CHECK_VALUE(coefficients.size(2) == basis.size(0), "coefficients M=", coefficients.size(2),
                    " does not match basis M=", basis.size(0), " (shapes ", drconv::tuple_str(coefficients.sizes()),
                    ", ", drconv::tuple_str(basis.sizes()), ")");
}

// The CPU kernel: float32 mixes the filters inside the kernel (the one-phase path of
// plugins/common/region_conv_cpu.h, as the MixtureRegionConv2d node does); other types
// mix them first and run region_conv.
at::Tensor mixture_region_conv_cpu(const at::Tensor& x, const at::Tensor& coefficients, const at::Tensor& basis,
                                   const at::Tensor& guide, at::IntArrayRef stride, at::IntArrayRef padding,
                                   at::IntArrayRef dilation) {
  check_mixture(coefficients, basis);
  TORCH_CHECK_VALUE(coefficients.scalar_type() == basis.scalar_type() && x.scalar_type() == basis.scalar_type(),
                    "x, coefficients and basis must share one dtype, got ", x.scalar_type(), ", ",
                    coefficients.scalar_type(), ", ", basis.scalar_type());
  if (x.scalar_type() != at::kFloat || x.numel() == 0 || basis.numel() == 0 || coefficients.numel() == 0)
    return region_conv_cpu(x, mixed_filters(coefficients, basis), guide, stride, padding, dilation);
  // region_conv's checks on the filters the two make, seen through a view of the basis's
  // first filter with their sizes: nothing is mixed yet.
  const at::Tensor shaped = basis.select(0, 0).permute({3, 0, 1, 2}).expand(
      {coefficients.size(0), coefficients.size(1), basis.size(4), basis.size(1), basis.size(2), basis.size(3)});
  drconv::RegionConvShape s = drconv::checked_shape(x, shaped, guide, stride, padding, dilation);
  s.layout = drconv::FilterLayout::kIHWO;
  const at::Tensor xc = x.contiguous(), gc = guide.contiguous(), zc = coefficients.contiguous(),
                   bc = basis.contiguous();
  at::Tensor y = at::empty({s.n, s.c_out, s.h_out(), s.w_out()}, x.options());
  const int64_t workers = at::get_num_threads(), bases = basis.size(0);
  at::Tensor workspace = at::empty({drconv::region_conv_workspace_size<float>(s, workers, bases)},
                                   x.options().dtype(at::kByte));
  const drconv::Mixture mixture{zc.data_ptr<float>(), bc.data_ptr<float>(), bases};
  drconv::region_conv_forward_f32(xc.data_ptr<float>(), nullptr, gc.data_ptr<float>(), y.data_ptr<float>(), s,
                                  AtenParallelFor{}, workers, workspace.data_ptr(), {}, &mixture);
  return y;
}

// Autograd: inference calls the kernel below; a call that needs gradients runs the mixture
// as a matmul and region_conv, whose autograd covers both.
at::Tensor mixture_region_conv_autograd(const at::Tensor& x, const at::Tensor& coefficients, const at::Tensor& basis,
                                        const at::Tensor& guide, at::IntArrayRef stride, at::IntArrayRef padding,
                                        at::IntArrayRef dilation) {
  if (!at::GradMode::is_enabled() ||
      !(x.requires_grad() || coefficients.requires_grad() || basis.requires_grad() || guide.requires_grad())) {
    static const auto op = c10::Dispatcher::singleton()
                               .findSchemaOrThrow("drconv::mixture_region_conv", "")
                               .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                                 const at::Tensor&, at::IntArrayRef, at::IntArrayRef, at::IntArrayRef)>();
    const at::AutoDispatchBelowADInplaceOrView below_autograd;
    return op.call(x, coefficients, basis, guide, stride, padding, dilation);
  }
  check_mixture(coefficients, basis);
  return region_conv_autograd(x, mixed_filters(coefficients, basis), guide, stride, padding, dilation);
}

// Which instruction set's variant the float32 kernel runs on this CPU (drconv info).
std::string cpu_isa() {
  switch (drconv::direct::best_isa()) {
    case drconv::direct::Isa::kAvx512:
      return "avx512";
    case drconv::direct::Isa::kAvx2:
      return "avx2";
    case drconv::direct::Isa::kBaseline:
      break;
  }
  return "baseline";
}

}  // namespace

TORCH_LIBRARY_IMPL(drconv, CPU, m) {
  m.impl("region_conv", TORCH_FN(region_conv_cpu));
  m.impl("mixture_region_conv", TORCH_FN(mixture_region_conv_cpu));
}

TORCH_LIBRARY_IMPL(drconv, Autograd, m) {
  m.impl("region_conv", TORCH_FN(region_conv_autograd));
  m.impl("mixture_region_conv", TORCH_FN(mixture_region_conv_autograd));
}

// Importing the module loads the library, which registers the kernels above.
PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("cpu_isa", &cpu_isa, "The instruction set the float32 CPU kernel runs on this CPU");
}
