// Checks the shared CPU kernel against a direct loop over the op's definition, on
// odd shapes, strides, dilations, pads, NaN guides and empty regions. Built plain
// and under ASan/UBSan (tests/test_native.py): any out-of-bounds access fails it.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <vector>

#include "region_conv_cpu.h"

namespace {

// The textbook triple loop: this test checks the kernel's indexing, not GEMM speed.
struct LoopGemm {
  void operator()(int64_t m, int64_t n, int64_t k, const double* a, const double* b, double* c) const {
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) {
        double sum = 0;
        for (int64_t p = 0; p < k; ++p) sum += a[i * k + p] * b[j * k + p];
        c[i * n + j] = sum;
      }
  }
};

struct SerialFor {
  template <typename F>
  void operator()(int64_t count, const F& fn) const {
    for (int64_t i = 0; i < count; ++i) fn(i);
  }
};

// y[n, o, p] = sum_{c,i,j} filters[n, r(n,p), o, c, i, j] * x_padded[n, c, ...]
std::vector<double> direct(const std::vector<double>& x, const std::vector<double>& f, const std::vector<double>& g,
                           const drconv::RegionConvShape& s) {
  const int64_t ho = s.h_out(), wo = s.w_out();
  std::vector<double> y(static_cast<size_t>(s.n * s.c_out * ho * wo), 0.0);
  for (int64_t n = 0; n < s.n; ++n)
    for (int64_t oh = 0; oh < ho; ++oh)
      for (int64_t ow = 0; ow < wo; ++ow) {
        const int64_t p = oh * wo + ow;
        const int64_t r = drconv::region_of(g.data() + n * s.regions * ho * wo + p, s.regions, ho * wo);
        for (int64_t o = 0; o < s.c_out; ++o) {
          double sum = 0;
          for (int64_t c = 0; c < s.c_in; ++c)
            for (int64_t i = 0; i < s.kh; ++i)
              for (int64_t j = 0; j < s.kw; ++j) {
                const int64_t ih = oh * s.stride_h + i * s.dil_h - s.pad_h;
                const int64_t iw = ow * s.stride_w + j * s.dil_w - s.pad_w;
                if (ih < 0 || ih >= s.h || iw < 0 || iw >= s.w) continue;
                sum += f[static_cast<size_t>((((n * s.regions + r) * s.c_out + o) * s.c_in + c) * s.kh * s.kw +
                                             i * s.kw + j)] *
                       x[static_cast<size_t>(((n * s.c_in + c) * s.h + ih) * s.w + iw)];
              }
          y[static_cast<size_t>((n * s.c_out + o) * ho * wo + p)] = sum;
        }
      }
  return y;
}

int check(const drconv::RegionConvShape& s, bool nan_guide, int64_t workers, std::mt19937& rng) {
  std::normal_distribution<double> normal;
  std::vector<double> x(static_cast<size_t>(s.n * s.c_in * s.h * s.w));
  std::vector<double> f(static_cast<size_t>(s.n * s.regions * s.c_out * s.c_in * s.kh * s.kw));
  std::vector<double> g(static_cast<size_t>(s.n * s.regions * s.pixels()));
  // Values exactly representable in float, so both paths see the same inputs (and ties).
  auto draw = [&] { return static_cast<double>(static_cast<float>(normal(rng))); };
  for (auto& v : x) v = draw();
  for (auto& v : f) v = draw();
  for (auto& v : g) v = draw();
  if (nan_guide)
    for (size_t i = 0; i < g.size(); i += 3) g[i] = std::nan("");
  std::vector<double> y(static_cast<size_t>(s.n * s.c_out * s.pixels()), -1.0);
  std::vector<char> workspace(static_cast<size_t>(drconv::region_conv_workspace_size<double>(s, workers)));
  drconv::region_conv_forward<double>(x.data(), f.data(), g.data(), y.data(), s, LoopGemm{}, SerialFor{}, workers,
                                      workspace.data());
  const std::vector<double> want = direct(x, f, g, s);
  double worst = 0;
  for (size_t i = 0; i < y.size(); ++i) worst = std::max(worst, std::fabs(y[i] - want[i]));

  // The float32 path (the direct kernel, region_conv_cpu_direct.h) on the same inputs: the
  // variant the entry point picks, then every instruction set this CPU runs (the AVX2 and
  // portable ones are otherwise never run on an AVX-512 machine).
  std::vector<float> xf(x.begin(), x.end()), ff(f.begin(), f.end()), gf(g.begin(), g.end());
  std::vector<char> workspace_f(static_cast<size_t>(drconv::region_conv_workspace_size<float>(s, workers)) + 64);
  void* aligned = workspace_f.data() + (64 - reinterpret_cast<uintptr_t>(workspace_f.data()) % 64) % 64;
  double worst_f = 0;
  auto compare = [&](const std::vector<float>& yf) {
    for (size_t i = 0; i < yf.size(); ++i) worst_f = std::max(worst_f, std::fabs(double(yf[i]) - want[i]));
  };
  std::vector<float> yf(y.size(), -1.0f);
  drconv::region_conv_forward_f32(xf.data(), ff.data(), gf.data(), yf.data(), s, SerialFor{}, workers, aligned);
  compare(yf);
  using drconv::direct::Isa;
  for (const Isa isa : {Isa::kAvx512, Isa::kAvx2, Isa::kBaseline}) {
    if (!drconv::direct::supported(isa) || s.n == 0 || s.c_out == 0) continue;
    std::fill(yf.begin(), yf.end(), -1.0f);
    drconv::detail::region_conv_forward_direct(xf.data(), ff.data(), gf.data(), yf.data(), s, SerialFor{}, workers,
                                               aligned, drconv::direct::kernels_for(isa));
    compare(yf);
  }
  // The same filters laid out IHWO ([N, R, C_in, kh, kw, C_out]): both paths read them as given.
  drconv::RegionConvShape t = s;
  t.layout = drconv::FilterLayout::kIHWO;
  const int64_t taps = s.kh * s.kw, filter = s.c_out * s.c_in * taps;
  std::vector<double> f_t(f.size());
  for (int64_t key = 0; key < s.n * s.regions; ++key)
    for (int64_t o = 0; o < s.c_out; ++o)
      for (int64_t k = 0; k < s.c_in * taps; ++k)
        f_t[static_cast<size_t>(key * filter + k * s.c_out + o)] = f[static_cast<size_t>(key * filter + o * s.c_in * taps + k)];
  std::vector<char> workspace_t(static_cast<size_t>(drconv::region_conv_workspace_size<double>(t, workers)));
  std::fill(y.begin(), y.end(), -1.0);
  drconv::region_conv_forward<double>(x.data(), f_t.data(), g.data(), y.data(), t, LoopGemm{}, SerialFor{}, workers,
                                      workspace_t.data());
  for (size_t i = 0; i < y.size(); ++i) worst = std::max(worst, std::fabs(y[i] - want[i]));
  // Exactly sized, so that ASan sees any read past the tensor's end.
  std::vector<float> ff_t(f_t.begin(), f_t.end());
  std::vector<char> workspace_ft(static_cast<size_t>(drconv::region_conv_workspace_size<float>(t, workers)) + 64);
  void* aligned_t = workspace_ft.data() + (64 - reinterpret_cast<uintptr_t>(workspace_ft.data()) % 64) % 64;
  for (const Isa isa : {Isa::kAvx512, Isa::kAvx2, Isa::kBaseline}) {
    if (!drconv::direct::supported(isa) || s.n == 0 || s.c_out == 0) continue;
    std::fill(yf.begin(), yf.end(), -1.0f);
    drconv::detail::region_conv_forward_direct(xf.data(), ff_t.data(), gf.data(), yf.data(), t, SerialFor{}, workers,
                                               aligned_t, drconv::direct::kernels_for(isa));
    compare(yf);
  }
  // With a bias and ReLU as the outputs are stored (one NaN in the bias: ReLU keeps it).
  std::vector<float> bias(static_cast<size_t>(s.c_out));
  for (auto& v : bias) v = static_cast<float>(normal(rng));
  if (!bias.empty()) bias[0] = std::nanf("");
  std::fill(yf.begin(), yf.end(), -1.0f);
  drconv::region_conv_forward_f32(xf.data(), ff_t.data(), gf.data(), yf.data(), t, SerialFor{}, workers, aligned_t,
                                  drconv::direct::Epilogue{bias.data(), true});
  const int64_t plane = s.pixels();
  for (size_t i = 0; i < yf.size(); ++i) {
    const double b = bias[static_cast<size_t>((static_cast<int64_t>(i) / plane) % std::max<int64_t>(s.c_out, 1))];
    const double expect = std::isnan(b) ? b : std::max(0.0, want[i] + b);
    const bool same = std::isnan(expect) ? std::isnan(yf[i]) : std::fabs(double(yf[i]) - expect) < 1e-3;
    if (!same) worst_f = std::max(worst_f, 1.0);
  }
  const bool ok = worst < 1e-9 && worst_f < 1e-3;
  std::printf("%s N=%lld C=%lld %lldx%lld R=%lld K=%lld k=%lldx%lld s=%lld,%lld p=%lld,%lld d=%lld,%lld nan=%d "
              "workers=%lld max_err double %.3g float %.3g\n",
              ok ? "ok  " : "FAIL", static_cast<long long>(s.n), static_cast<long long>(s.c_in),
              static_cast<long long>(s.h), static_cast<long long>(s.w), static_cast<long long>(s.regions),
              static_cast<long long>(s.c_out), static_cast<long long>(s.kh), static_cast<long long>(s.kw),
              static_cast<long long>(s.stride_h), static_cast<long long>(s.stride_w), static_cast<long long>(s.pad_h),
              static_cast<long long>(s.pad_w), static_cast<long long>(s.dil_h), static_cast<long long>(s.dil_w),
              nan_guide ? 1 : 0, static_cast<long long>(workers), worst, worst_f);
  return ok ? 0 : 1;
}

// A MixtureRegionConv2d's filters mixed by the kernel (Mixture), in both layouts and with
// every instruction set, against the loop over filters mixed here in double. `routed`: the
// coefficients computed by the kernel from x (routing and routing_bias), here too.
int check_mixture(const drconv::RegionConvShape& s, int64_t bases, int64_t workers, std::mt19937& rng,
                  bool routed = false) {
  std::normal_distribution<double> normal;
  auto draw = [&] { return static_cast<double>(static_cast<float>(normal(rng))); };
  const int64_t taps = s.kh * s.kw, filter = s.c_out * s.c_in * taps, width = s.regions * bases;
  std::vector<double> x(static_cast<size_t>(s.n * s.c_in * s.h * s.w)), z(static_cast<size_t>(s.n * width));
  std::vector<double> basis(static_cast<size_t>(bases * filter)), g(static_cast<size_t>(s.n * s.regions * s.pixels()));
  std::vector<double> routing(static_cast<size_t>(s.c_in * width)), routing_bias(static_cast<size_t>(width));
  for (auto* v : {&x, &z, &basis, &g, &routing, &routing_bias})
    for (auto& e : *v) e = draw();
  if (routed)  // z[n] = sigmoid(mean_hw(x[n]) @ routing + routing_bias)
    for (int64_t n = 0; n < s.n; ++n)
      for (int64_t j = 0; j < width; ++j) {
        double v = routing_bias[static_cast<size_t>(j)];
        for (int64_t c = 0; c < s.c_in; ++c) {
          double sum = 0;
          for (int64_t p = 0; p < s.h * s.w; ++p) sum += x[static_cast<size_t>((n * s.c_in + c) * s.h * s.w + p)];
          v += sum / static_cast<double>(s.h * s.w) * routing[static_cast<size_t>(c * width + j)];
        }
        z[static_cast<size_t>(n * width + j)] = 1.0 / (1.0 + std::exp(-v));
      }
  std::vector<double> f(static_cast<size_t>(s.n * s.regions * filter), 0.0);  // OIHW
  for (int64_t key = 0; key < s.n * s.regions; ++key)
    for (int64_t m = 0; m < bases; ++m)
      for (int64_t l = 0; l < filter; ++l)
        f[static_cast<size_t>(key * filter + l)] +=
            z[static_cast<size_t>(key * bases + m)] * basis[static_cast<size_t>(m * filter + l)];
  const std::vector<double> want = direct(x, f, g, s);
  std::vector<float> xf(x.begin(), x.end()), zf(z.begin(), z.end()), gf(g.begin(), g.end()), yf(want.size());
  std::vector<float> routing_f(routing.begin(), routing.end()), routing_bias_f(routing_bias.begin(), routing_bias.end());
  double worst = 0;
  for (const auto layout : {drconv::FilterLayout::kOIHW, drconv::FilterLayout::kIHWO}) {
    drconv::RegionConvShape t = s;
    t.layout = layout;
    std::vector<float> basis_f(basis.size());
    for (int64_t m = 0; m < bases; ++m)
      for (int64_t o = 0; o < s.c_out; ++o)
        for (int64_t k = 0; k < s.c_in * taps; ++k) {
          const int64_t at = layout == drconv::FilterLayout::kIHWO ? k * s.c_out + o : o * s.c_in * taps + k;
          const double value = basis[static_cast<size_t>(m * filter + o * s.c_in * taps + k)];
          basis_f[static_cast<size_t>(m * filter + at)] = static_cast<float>(value);
        }
    std::vector<char> workspace(static_cast<size_t>(drconv::region_conv_workspace_size<float>(t, workers, bases)) + 64);
    void* aligned = workspace.data() + (64 - reinterpret_cast<uintptr_t>(workspace.data()) % 64) % 64;
    const drconv::Mixture mixture = routed ? drconv::Mixture{nullptr, basis_f.data(), bases, routing_f.data(),
                                                             routing_bias_f.data()}
                                           : drconv::Mixture{zf.data(), basis_f.data(), bases};
    using drconv::direct::Isa;
    for (const Isa isa : {Isa::kAvx512, Isa::kAvx2, Isa::kBaseline}) {
      if (!drconv::direct::supported(isa)) continue;
      std::fill(yf.begin(), yf.end(), -1.0f);
      drconv::detail::region_conv_forward_direct(xf.data(), nullptr, gf.data(), yf.data(), t, SerialFor{}, workers,
                                                 aligned, drconv::direct::kernels_for(isa), {}, &mixture);
      for (size_t i = 0; i < yf.size(); ++i) worst = std::max(worst, std::fabs(double(yf[i]) - want[i]));
    }
  }
  const bool ok = worst < 1e-3;
  std::printf("%s %s N=%lld C=%lld %lldx%lld R=%lld M=%lld K=%lld k=%lldx%lld workers=%lld max_err %.3g\n",
              ok ? "ok  " : "FAIL", routed ? "routed mixture" : "mixture", static_cast<long long>(s.n),
              static_cast<long long>(s.c_in), static_cast<long long>(s.h), static_cast<long long>(s.w),
              static_cast<long long>(s.regions), static_cast<long long>(bases), static_cast<long long>(s.c_out), static_cast<long long>(s.kh),
              static_cast<long long>(s.kw), static_cast<long long>(workers), worst);
  return ok ? 0 : 1;
}

// X and Y in ONNX Runtime's NCHWc layout (x_block, y_block), with a bias and ReLU, plain
// filters or a routed mixture: against the NCHW call on the same inputs, in every instruction
// set, the padding lanes of Y stored as 0 (they hold NaN before the call).
int check_blocked(drconv::RegionConvShape s, int64_t x_block, int64_t y_block, int64_t bases, int64_t workers,
                  std::mt19937& rng) {
  std::normal_distribution<float> normal;
  s.layout = drconv::FilterLayout::kIHWO;
  const int64_t filter = s.c_out * s.c_in * s.kh * s.kw, width = s.regions * bases, plane_in = s.h * s.w;
  std::vector<float> x(static_cast<size_t>(s.n * s.c_in * plane_in)), g(static_cast<size_t>(s.n * s.regions * s.pixels()));
  std::vector<float> f(static_cast<size_t>((bases > 0 ? bases : s.n * s.regions) * filter)), bias(static_cast<size_t>(s.c_out));
  std::vector<float> routing(static_cast<size_t>(s.c_in * width)), routing_bias(static_cast<size_t>(width));
  for (auto* v : {&x, &g, &f, &bias, &routing, &routing_bias})
    for (auto& e : *v) e = normal(rng);
  const drconv::Mixture mixture{nullptr, f.data(), bases, routing.data(), routing_bias.data()};
  const drconv::Mixture* mixed = bases > 0 ? &mixture : nullptr;
  const drconv::direct::Epilogue epilogue{bias.data(), true};
  auto run = [&](const drconv::RegionConvShape& t, const std::vector<float>& input, std::vector<float>& y,
                 drconv::direct::Isa isa) {
    std::vector<char> workspace(static_cast<size_t>(drconv::region_conv_workspace_size<float>(t, workers, bases)) + 64);
    void* aligned = workspace.data() + (64 - reinterpret_cast<uintptr_t>(workspace.data()) % 64) % 64;
    drconv::detail::region_conv_forward_direct(input.data(), bases > 0 ? nullptr : f.data(), g.data(), y.data(), t,
                                               SerialFor{}, workers, aligned, drconv::direct::kernels_for(isa),
                                               epilogue, mixed);
  };
  drconv::RegionConvShape b = s;
  b.x_block = x_block, b.y_block = y_block;
  const int64_t cx = drconv::RegionConvShape::padded_channels(s.c_in, x_block);
  const int64_t cy = drconv::RegionConvShape::padded_channels(s.c_out, y_block), pixels = s.pixels();
  // x blocked: channel c of pixel p at (c / B * HW + p) * B + c % B, padding lanes 0.
  std::vector<float> xb(x);
  if (x_block > 0) {
    xb.assign(static_cast<size_t>(s.n * cx * plane_in), 0.0f);
    for (int64_t n = 0; n < s.n; ++n)
      for (int64_t c = 0; c < s.c_in; ++c)
        for (int64_t p = 0; p < plane_in; ++p)
          xb[static_cast<size_t>(n * cx * plane_in + (c / x_block * plane_in + p) * x_block + c % x_block)] =
              x[static_cast<size_t>((n * s.c_in + c) * plane_in + p)];
  }
  auto y_at = [&](int64_t n, int64_t c, int64_t p) {
    return y_block > 0 ? n * cy * pixels + (c / y_block * pixels + p) * y_block + c % y_block
                       : (n * s.c_out + c) * pixels + p;
  };
  double worst = 0;
  bool padding_zero = true;
  using drconv::direct::Isa;
  for (const Isa isa : {Isa::kAvx512, Isa::kAvx2, Isa::kBaseline}) {
    if (!drconv::direct::supported(isa)) continue;
    std::vector<float> want(static_cast<size_t>(s.n * s.c_out * pixels)), y(static_cast<size_t>(s.n * cy * pixels), std::nanf(""));
    run(s, x, want, isa);
    run(b, xb, y, isa);
    for (int64_t n = 0; n < s.n; ++n)
      for (int64_t p = 0; p < pixels; ++p) {
        for (int64_t c = 0; c < s.c_out; ++c)
          worst = std::max(worst, double(std::fabs(y[static_cast<size_t>(y_at(n, c, p))] -
                                                    want[static_cast<size_t>((n * s.c_out + c) * pixels + p)])));
        for (int64_t c = s.c_out; c < cy; ++c) padding_zero = padding_zero && y[static_cast<size_t>(y_at(n, c, p))] == 0.0f;
      }
  }
  const bool ok = worst < 1e-4 && padding_zero;
  std::printf("%s blocked x=%lld y=%lld N=%lld C=%lld %lldx%lld R=%lld M=%lld K=%lld k=%lldx%lld s=%lld workers=%lld "
              "max_err %.3g padding %s\n",
              ok ? "ok  " : "FAIL", static_cast<long long>(x_block), static_cast<long long>(y_block),
              static_cast<long long>(s.n), static_cast<long long>(s.c_in), static_cast<long long>(s.h),
              static_cast<long long>(s.w), static_cast<long long>(s.regions), static_cast<long long>(bases),
              static_cast<long long>(s.c_out), static_cast<long long>(s.kh), static_cast<long long>(s.kw),
              static_cast<long long>(s.stride_h), static_cast<long long>(workers), worst,
              padding_zero ? "zero" : "NOT ZERO");
  return ok ? 0 : 1;
}

drconv::RegionConvShape shape(int64_t n, int64_t c, int64_t h, int64_t w, int64_t r, int64_t k_out, int64_t kh,
                              int64_t kw, int64_t s, int64_t p, int64_t d) {
  drconv::RegionConvShape out;
  out.n = n, out.c_in = c, out.h = h, out.w = w, out.regions = r, out.c_out = k_out, out.kh = kh, out.kw = kw;
  out.stride_h = out.stride_w = s, out.pad_h = out.pad_w = p, out.dil_h = out.dil_w = d;
  return out;
}

}  // namespace

// Counts the cases as they run: `failures += check(...)` is one case and its failures.
struct Tally {
  int cases = 0, failed = 0;
  Tally& operator+=(int failures) {
    ++cases;
    failed += failures;
    return *this;
  }
};

int main() {
  std::mt19937 rng(7);
  Tally failures;
  failures += check(shape(1, 3, 7, 9, 1, 2, 3, 3, 1, 1, 1), false, 1, rng);
  failures += check(shape(2, 5, 13, 11, 8, 7, 3, 3, 1, 1, 1), false, 3, rng);
  failures += check(shape(2, 4, 15, 10, 4, 6, 5, 5, 2, 2, 1), false, 2, rng);
  failures += check(shape(1, 3, 17, 19, 3, 4, 3, 3, 2, 2, 2), false, 4, rng);
  failures += check(shape(3, 2, 9, 9, 6, 3, 1, 1, 1, 0, 1), false, 2, rng);
  failures += check(shape(1, 6, 300, 3, 2, 2, 3, 1, 1, 0, 1), false, 2, rng);  // more pixels than one tile
  failures += check(shape(2, 4, 12, 12, 5, 3, 3, 3, 1, 3, 3), true, 2, rng);   // NaN guide, dilation 3
  failures += check(shape(1, 1, 4, 4, 16, 1, 3, 3, 3, 0, 1), false, 8, rng);  // more regions than pixels
  drconv::RegionConvShape odd = shape(1, 3, 11, 8, 2, 2, 3, 2, 1, 0, 1);
  odd.stride_w = 2, odd.pad_w = 1, odd.dil_h = 2, odd.pad_h = 2;
  failures += check(odd, false, 2, rng);
  failures += check(shape(2, 70, 9, 70, 3, 70, 3, 3, 1, 1, 1), false, 3, rng);  // C_in, C_out > 64, rows > 64
  failures += check(shape(1, 17, 6, 6, 2, 17, 3, 3, 1, 1, 1), false, 1, rng);   // partial output vector
  failures += check(shape(1, 3, 12, 13, 2, 5, 9, 9, 1, 4, 1), false, 2, rng);   // 81 taps: the reduction in pieces
  // More output rows than input rows, in more bands than input rows (only some bands pad x).
  failures += check(shape(1, 3, 1, 5, 2, 4, 1, 1, 1, 2, 1), false, 4, rng);
  failures += check(shape(2, 3, 2, 6, 3, 4, 3, 3, 1, 3, 1), true, 6, rng);
  // The zoo's 1x1 layers: C_out not a multiple of 16 (the IHWO tail copy), x read unpadded.
  failures += check(shape(2, 58, 7, 7, 8, 58, 1, 1, 1, 0, 1), false, 2, rng);
  failures += check(shape(1, 24, 9, 5, 8, 24, 1, 1, 2, 0, 1), false, 3, rng);
  failures += check(shape(1, 96, 4, 4, 16, 80, 1, 1, 1, 0, 1), true, 2, rng);
  // The one-phase path: windows of 116 channels that start off a vector, 3x3 taps in windows.
  failures += check(shape(1, 232, 7, 7, 8, 232, 1, 1, 1, 0, 1), false, 2, rng);
  failures += check(shape(1, 20, 9, 9, 4, 40, 3, 3, 1, 1, 1), false, 3, rng);
  // Mixed filters: the zoo's 1x1 layers (channels split over the workers where the map is
  // small, blocks elsewhere), more bases than the kernel holds at once, 3x3 taps.
  failures += check_mixture(shape(1, 96, 4, 4, 16, 80, 1, 1, 1, 0, 1), 8, 2, rng);
  failures += check_mixture(shape(1, 58, 7, 7, 8, 58, 1, 1, 1, 0, 1), 8, 2, rng);
  failures += check_mixture(shape(2, 24, 9, 9, 8, 24, 1, 1, 1, 0, 1), 8, 3, rng);
  failures += check_mixture(shape(2, 5, 13, 11, 8, 7, 3, 3, 1, 1, 1), 20, 3, rng);
  // The one-phase path (LocalLayout): bands of rows, channel windows that start off a vector
  // (232 channels over two workers), padding and taps in a window, samples split unevenly,
  // one worker, a large map; and the phased path it leaves: windows wider than C_out.
  failures += check_mixture(shape(1, 24, 28, 28, 8, 24, 1, 1, 1, 0, 1), 8, 2, rng);
  failures += check_mixture(shape(1, 232, 7, 7, 8, 232, 1, 1, 1, 0, 1), 8, 2, rng);
  failures += check_mixture(shape(1, 17, 6, 6, 8, 17, 3, 3, 1, 1, 1), 8, 2, rng);
  failures += check_mixture(shape(4, 20, 5, 5, 4, 20, 3, 3, 2, 1, 1), 8, 3, rng);
  failures += check_mixture(shape(3, 33, 6, 5, 8, 33, 1, 1, 1, 0, 1), 8, 1, rng);
  failures += check_mixture(shape(1, 16, 40, 40, 8, 40, 1, 1, 1, 0, 1), 8, 2, rng);
  failures += check_mixture(shape(1, 10, 5, 5, 3, 12, 1, 1, 1, 0, 1), 8, 2, rng);
  // Bands of rows, each worker padding the input rows it reads: stride 1 and 2.
  failures += check_mixture(shape(1, 12, 20, 20, 4, 12, 3, 3, 1, 1, 1), 2, 2, rng);
  failures += check_mixture(shape(1, 8, 33, 31, 4, 8, 3, 3, 2, 1, 1), 2, 3, rng);
  // Routed (node version 4): the kernel computes the coefficients from x on every path:
  // windows, bands (odd map: the means' vector tail), samples, phased (and OIHW in each).
  failures += check_mixture(shape(1, 232, 7, 7, 8, 232, 1, 1, 1, 0, 1), 8, 2, rng, true);
  failures += check_mixture(shape(1, 24, 27, 29, 8, 24, 1, 1, 1, 0, 1), 8, 2, rng, true);
  failures += check_mixture(shape(4, 20, 5, 5, 4, 20, 3, 3, 2, 1, 1), 8, 3, rng, true);
  failures += check_mixture(shape(1, 10, 5, 5, 3, 12, 1, 1, 1, 0, 1), 3, 2, rng, true);
  // ONNX Runtime's NCHWc layout (blocks of 16 with AVX-512, 8 with AVX2; 4 for a block shorter
  // than a vector's half): the zoo's 1x1 layers, whose C is no multiple of the block, on every
  // split (channel windows, bands of rows, samples, one worker), x or y alone blocked, a
  // stride-2 1x1 and a 3x3 without padding; plain filters and routed mixtures.
  const int64_t blocks[][2] = {{16, 16}, {8, 8}, {16, 0}, {0, 16}, {4, 8}};
  for (const auto& xy : blocks) {
    for (const int64_t bases : {int64_t{0}, int64_t{8}}) {
      failures += check_blocked(shape(1, 24, 28, 28, 8, 24, 1, 1, 1, 0, 1), xy[0], xy[1], bases, 2, rng);
      failures += check_blocked(shape(1, 58, 7, 7, 8, 58, 1, 1, 1, 0, 1), xy[0], xy[1], bases, 2, rng);
      failures += check_blocked(shape(2, 48, 9, 11, 8, 40, 1, 1, 1, 0, 1), xy[0], xy[1], bases, 3, rng);
      failures += check_blocked(shape(1, 17, 40, 40, 4, 33, 1, 1, 1, 0, 1), xy[0], xy[1], bases, 2, rng);
      failures += check_blocked(shape(1, 12, 6, 6, 8, 12, 1, 1, 1, 0, 1), xy[0], xy[1], bases, 2, rng);
    }
    failures += check_blocked(shape(1, 20, 11, 9, 3, 24, 1, 1, 2, 0, 1), xy[0], xy[1], 0, 2, rng);
    failures += check_blocked(shape(2, 20, 10, 9, 3, 18, 3, 3, 1, 0, 1), xy[0], xy[1], 4, 1, rng);
  }
  const bool rejects_empty = !drconv::validate(shape(1, 1, 2, 2, 1, 1, 5, 5, 1, 0, 1)).empty();
  std::printf(rejects_empty ? "ok   validate rejects an empty output\n" : "FAIL validate accepted an empty output\n");
  failures += rejects_empty ? 0 : 1;
  // A layer of fewer multiply-adds than kSerialMultiplyAdds runs on one worker, a larger one on all.
  const drconv::RegionConvShape tiny = shape(1, 4, 8, 8, 2, 4, 1, 1, 1, 0, 1);
  const drconv::RegionConvShape zoo = shape(1, 96, 7, 7, 8, 96, 1, 1, 1, 0, 1);
  const bool workers_ok = drconv::useful_workers(tiny, 4) == 1 && drconv::useful_workers(zoo, 4) == 4 &&
                          drconv::useful_workers(zoo, 0) == 1;
  std::printf(workers_ok ? "ok   useful_workers: one for a tiny layer, all for a zoo layer\n" : "FAIL useful_workers\n");
  failures += workers_ok ? 0 : 1;
  std::printf("%d passed, %d failed\n", failures.cases - failures.failed, failures.failed);
  return failures.failed == 0 ? 0 : 1;
}
