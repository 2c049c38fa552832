// CPU kernels against plain double-precision references, at odd sizes on purpose: GEMM (all
// epilogues, row-independence of results), LayerNorm, GroupNorm+swish, paged attention through
// scattered block tables, conv2d 3x3/1x1, upsampling, spatial attention, guidance and sampling.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>
#include <vector>

#include "lpd/kernels/attention.h"
#include "lpd/kernels/conv.h"
#include "lpd/kernels/gemm.h"
#include "lpd/kernels/kv_cache.h"
#include "lpd/kernels/norm.h"
#include "lpd/kernels/sampling.h"
#include "test_util.h"

using namespace lpd::kernels;

static std::mt19937 rng(1234);
static std::vector<float> randn(size_t n, float scale = 1.0f) {
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}
static double max_rel(const std::vector<float>& a, const std::vector<double>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    num = std::max(num, std::fabs(a[i] - b[i]));
    den = std::max(den, std::fabs(b[i]));
  }
  return num / std::max(den, 1e-30);
}

static void test_gemm() {
  for (auto [m, n, k] : {std::array<int64_t, 3>{1, 1, 1}, {17, 33, 111}, {70, 16, 5}, {130, 47, 64}}) {
    auto a = randn(size_t(m * k)), w = randn(size_t(n * k)), bias = randn(size_t(n));
    std::vector<float> packed(gemm_packed_size(n, k));
    CHECK(gemm_pack(w.data(), n, k, k, 1, packed.data()) == Status::kOk);
    std::vector<double> ref(size_t(m * n));
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) {
        double s = bias[size_t(j)];
        for (int64_t kk = 0; kk < k; ++kk) s += double(a[size_t(i * k + kk)]) * w[size_t(j * k + kk)];
        ref[size_t(i * n + j)] = s;
      }
    std::vector<float> c(size_t(m * n), NAN);  // poisoned
    CHECK(gemm(a.data(), k, packed.data(), bias.data(), c.data(), n, m, n, k, Epilogue::kStore) == Status::kOk);
    CHECK(max_rel(c, ref) < 1e-5);
    // Row independence: row i computed alone gives the same bits.
    std::vector<float> one(static_cast<size_t>(n));
    const int64_t i = m / 2;
    gemm(a.data() + i * k, k, packed.data(), bias.data(), one.data(), n, 1, n, k, Epilogue::kStore);
    CHECK(std::memcmp(one.data(), c.data() + i * n, size_t(n) * 4) == 0);
    // Accumulate and GELU epilogues.
    std::vector<float> acc(size_t(m * n), 1.0f);
    gemm(a.data(), k, packed.data(), bias.data(), acc.data(), n, m, n, k, Epilogue::kAccumulate);
    std::vector<double> ref_acc(ref), ref_gelu(ref);
    for (auto& x : ref_acc) x += 1.0;
    for (auto& x : ref_gelu) x = x * 0.5 * (1.0 + std::erf(x / std::sqrt(2.0)));
    CHECK(max_rel(acc, ref_acc) < 1e-5);
    gemm(a.data(), k, packed.data(), bias.data(), c.data(), n, m, n, k, Epilogue::kGelu);
    CHECK(max_rel(c, ref_gelu) < 1e-5);
  }
  // Transposed packing (col_stride != 1).
  auto w = randn(5 * 7);  // logical [n=7, k=5] stored as [k, n]
  std::vector<float> packed(gemm_packed_size(7, 5)), out(7);
  std::vector<float> x = {1, 0, 0, 0, 0};
  gemm_pack(w.data(), 7, 5, 1, 7, packed.data());
  gemm(x.data(), 5, packed.data(), nullptr, out.data(), 7, 1, 7, 5, Epilogue::kStore);
  CHECK(std::equal(out.begin(), out.end(), w.begin()));
  CHECK(gemm(nullptr, 1, packed.data(), nullptr, out.data(), 7, 1, 7, 5, Epilogue::kStore) == Status::kInvalidArgument);
}

static void test_norms() {
  const int64_t rows = 5, dim = 37;
  auto x = randn(size_t(rows * dim), 3.0f), g = randn(size_t(dim)), b = randn(size_t(dim));
  std::vector<float> out(x.size());
  CHECK(layer_norm(x.data(), dim, g.data(), b.data(), 1e-6f, out.data(), dim, rows, dim) == Status::kOk);
  std::vector<double> ref(x.size());
  for (int64_t r = 0; r < rows; ++r) {
    double mean = 0, var = 0;
    for (int64_t i = 0; i < dim; ++i) mean += x[size_t(r * dim + i)];
    mean /= dim;
    for (int64_t i = 0; i < dim; ++i) var += std::pow(x[size_t(r * dim + i)] - mean, 2);
    var /= dim;
    for (int64_t i = 0; i < dim; ++i)
      ref[size_t(r * dim + i)] = (x[size_t(r * dim + i)] - mean) / std::sqrt(var + 1e-6) * g[size_t(i)] + b[size_t(i)];
  }
  CHECK(max_rel(out, ref) < 1e-5);

  const int64_t pixels = 13, channels = 64, groups = 32, per = 2;
  auto y = randn(size_t(pixels * channels), 2.0f), gg = randn(size_t(channels)), bb = randn(size_t(channels));
  std::vector<float> gout(y.size());
  CHECK(group_norm(y.data(), gg.data(), bb.data(), 1e-6f, true, gout.data(), pixels, channels, groups) == Status::kOk);
  std::vector<double> gref(y.size());
  for (int64_t gi = 0; gi < groups; ++gi) {
    double mean = 0, var = 0;
    for (int64_t p = 0; p < pixels; ++p)
      for (int64_t c = gi * per; c < (gi + 1) * per; ++c) mean += y[size_t(p * channels + c)];
    mean /= pixels * per;
    for (int64_t p = 0; p < pixels; ++p)
      for (int64_t c = gi * per; c < (gi + 1) * per; ++c) var += std::pow(y[size_t(p * channels + c)] - mean, 2);
    var /= pixels * per;
    for (int64_t p = 0; p < pixels; ++p)
      for (int64_t c = gi * per; c < (gi + 1) * per; ++c) {
        const double v = (y[size_t(p * channels + c)] - mean) / std::sqrt(var + 1e-6) * gg[size_t(c)] + bb[size_t(c)];
        gref[size_t(p * channels + c)] = v / (1 + std::exp(-v));
      }
  }
  CHECK(max_rel(gout, gref) < 1e-5);
  CHECK(group_norm(y.data(), gg.data(), bb.data(), 1e-6f, true, gout.data(), pixels, 63, groups) ==
        Status::kInvalidArgument);
}

static void test_paged_attention() {
  const int64_t heads = 3, hd = 5, bs = 4, num_blocks = 9, width = heads * hd;
  // Two sequences with scattered blocks; each of length 11 (3 blocks).
  const std::vector<int32_t> tables = {7, 2, 5, 0, 8, 3};  // [2 seqs, 3 blocks]
  const int64_t len = 11;
  std::vector<float> kc(size_t(num_blocks * bs * width), NAN), vc(kc.size(), NAN);
  auto k = randn(size_t(2 * len * width)), v = randn(size_t(2 * len * width));
  std::vector<int64_t> slots;
  for (int s = 0; s < 2; ++s)
    for (int64_t t = 0; t < len; ++t) slots.push_back(int64_t(tables[size_t(s * 3 + t / bs)]) * bs + t % bs);
  // k/v rows interleaved in one buffer of stride 2*width, as from a qkv GEMM.
  std::vector<float> kv(size_t(2 * len * 2 * width));
  for (int64_t r = 0; r < 2 * len; ++r) {
    std::copy_n(k.data() + r * width, width, kv.data() + r * 2 * width);
    std::copy_n(v.data() + r * width, width, kv.data() + r * 2 * width + width);
  }
  CHECK(kv_cache_write(kv.data(), kv.data() + width, 2 * width, slots.data(), 2 * len, width, kc.data(), vc.data()) ==
        Status::kOk);
  const std::vector<int32_t> row_seq = {0, 1, 1, 0}, vis = {1, 11, 6, 9};
  auto q = randn(size_t(4 * width));
  std::vector<float> out(size_t(4 * width), NAN);
  const float scale = 1.0f / std::sqrt(float(hd));
  PagedAttentionParams p{q.data(), width, kc.data(), vc.data(), tables.data(), 3, row_seq.data(), vis.data(),
                         4, heads, hd, bs, scale, out.data(), width};
  CHECK(paged_attention(p) == Status::kOk);
  std::vector<double> ref(out.size());
  for (int64_t r = 0; r < 4; ++r)
    for (int64_t h = 0; h < heads; ++h) {
      std::vector<double> s(size_t(vis[size_t(r)]));
      double mx = -1e300, den = 0;
      for (int64_t t = 0; t < vis[size_t(r)]; ++t) {
        double dot = 0;
        for (int64_t i = 0; i < hd; ++i)
          dot += double(q[size_t(r * width + h * hd + i)]) * k[size_t((row_seq[size_t(r)] * len + t) * width + h * hd + i)];
        s[size_t(t)] = dot * scale;
        mx = std::max(mx, s[size_t(t)]);
      }
      for (auto& x : s) den += (x = std::exp(x - mx));
      for (int64_t i = 0; i < hd; ++i) {
        double o = 0;
        for (int64_t t = 0; t < vis[size_t(r)]; ++t)
          o += s[size_t(t)] * v[size_t((row_seq[size_t(r)] * len + t) * width + h * hd + i)];
        ref[size_t(r * width + h * hd + i)] = o / den;
      }
    }
  CHECK(max_rel(out, ref) < 1e-5);
  const std::vector<int32_t> too_long = {1, 13, 6, 9};
  p.visible_len = too_long.data();
  CHECK(paged_attention(p) == Status::kInvalidArgument);
}

static void test_conv_and_attention() {
  const int64_t h = 5, w = 7, cin = 6, cout = 9;
  auto x = randn(size_t(h * w * cin)), wt = randn(size_t(cout * cin * 9)), b = randn(size_t(cout));
  std::vector<float> packed(gemm_packed_size(cout, cin * 9)), out(size_t(h * w * cout)),
      scratch(conv2d_scratch_floats(h, w, cin, 3));
  gemm_pack(wt.data(), cout, cin * 9, cin * 9, 1, packed.data());
  CHECK(conv2d(x.data(), h, w, cin, packed.data(), b.data(), cout, 3, Epilogue::kStore, scratch.data(), out.data()) ==
        Status::kOk);
  std::vector<double> ref(out.size());
  for (int64_t y = 0; y < h; ++y)
    for (int64_t xx = 0; xx < w; ++xx)
      for (int64_t o = 0; o < cout; ++o) {
        double s = b[size_t(o)];
        for (int64_t c = 0; c < cin; ++c)
          for (int64_t ky = 0; ky < 3; ++ky)
            for (int64_t kx = 0; kx < 3; ++kx) {
              const int64_t sy = y + ky - 1, sx = xx + kx - 1;
              if (sy < 0 || sy >= h || sx < 0 || sx >= w) continue;
              s += double(x[size_t((sy * w + sx) * cin + c)]) * wt[size_t(((o * cin + c) * 3 + ky) * 3 + kx)];
            }
        ref[size_t((y * w + xx) * cout + o)] = s;
      }
  CHECK(max_rel(out, ref) < 1e-5);

  std::vector<float> up(size_t(4 * h * w * cin));
  CHECK(upsample_nearest2x(x.data(), h, w, cin, up.data()) == Status::kOk);
  CHECK(up[size_t(((2 * 3 + 1) * (2 * w) + (2 * 4 + 1)) * cin + 2)] == x[size_t((3 * w + 4) * cin + 2)]);

  const int64_t px = 19, c = 8;
  auto q = randn(size_t(px * c)), k = randn(size_t(px * c)), v = randn(size_t(px * c));
  std::vector<float> ao(size_t(px * c)), sc(spatial_attention_scratch_floats(px, c));
  CHECK(spatial_attention(q.data(), k.data(), v.data(), px, c, 0.35f, sc.data(), ao.data()) == Status::kOk);
  std::vector<double> aref(ao.size());
  for (int64_t i = 0; i < px; ++i) {
    std::vector<double> s(static_cast<size_t>(px));
    double mx = -1e300, den = 0;
    for (int64_t j = 0; j < px; ++j) {
      double d = 0;
      for (int64_t t = 0; t < c; ++t) d += double(q[size_t(i * c + t)]) * k[size_t(j * c + t)];
      s[size_t(j)] = d * 0.35f;
      mx = std::max(mx, s[size_t(j)]);
    }
    for (auto& e : s) den += (e = std::exp(e - mx));
    for (int64_t t = 0; t < c; ++t) {
      double o = 0;
      for (int64_t j = 0; j < px; ++j) o += s[size_t(j)] * v[size_t(j * c + t)];
      aref[size_t(i * c + t)] = o / den;
    }
  }
  CHECK(max_rel(ao, aref) < 1e-5);
}

static void test_sampling() {
  const int64_t vocab = 11;
  const std::vector<float> logits = {0.5f, 2.0f, -1.0f, 2.0f, 1.5f, 0.0f, 1.9f, -3.0f, 0.2f, 1.0f, 2.0f};
  std::vector<uint64_t> ws(sample_workspace_bytes(vocab) / 8 + 1);
  int64_t tok = -1;
  CHECK(sample_row(logits.data(), vocab, {0.0, 0, 1.0}, nullptr, ws.data(), &tok) == Status::kOk && tok == 1);
  CHECK(sample_row(logits.data(), vocab, {1.0, 1, 1.0}, nullptr, ws.data(), &tok) == Status::kOk && tok == 1);
  // Uniform noise that favours index 7 (u close to 1 gives a large Gumbel), which top-k must drop.
  std::vector<double> u(size_t(vocab), 0.5);
  u[7] = 1.0 - 1e-12;
  u[4] = 0.999;
  CHECK(sample_row(logits.data(), vocab, {1.0, 0, 1.0}, u.data(), ws.data(), &tok) == Status::kOk && tok == 7);
  // top_k = 3 keeps every value >= the 3rd largest (2.0): indices 1, 3, 10 (ties kept).
  CHECK(sample_row(logits.data(), vocab, {1.0, 3, 1.0}, u.data(), ws.data(), &tok) == Status::kOk && tok == 1);
  // top_k = 4 keeps 1.9 too (index 6) but not 1.5 (index 4).
  u[6] = 0.99;
  CHECK(sample_row(logits.data(), vocab, {1.0, 4, 1.0}, u.data(), ws.data(), &tok) == Status::kOk && tok == 6);
  // top_p tiny keeps only the first of the sorted order: the largest value, smallest index.
  CHECK(sample_row(logits.data(), vocab, {1.0, 0, 1e-6}, u.data(), ws.data(), &tok) == Status::kOk && tok == 1);
  CHECK(sample_row(logits.data(), vocab, {1.0, 0, 0.0}, u.data(), ws.data(), &tok) == Status::kInvalidArgument);

  const std::vector<float> c = {1.0f, 2.0f}, un = {0.5f, -1.0f};
  std::vector<float> g(2);
  const float wgt = 3.0f;
  CHECK(guidance_combine(c.data(), un.data(), &wgt, g.data(), 2, 1, 2) == Status::kOk);
  CHECK(g[0] == 2.0f && g[1] == 8.0f);
}

int main() {
  set_num_threads(2);
  test_gemm();
  test_norms();
  test_paged_attention();
  test_conv_and_attention();
  test_sampling();
  return finish("test_kernels");
}
