// CPU VQ decoder (lpd/vq_decoder.h): conv_in, mid (res, attn, res), levels from the lowest
// resolution up (res blocks, attention at the first level, nearest 2x + conv between levels),
// GroupNorm + swish, conv_out, then the uint8 conversion.
#include "lpd/vq_decoder.h"

#include <algorithm>
#include <cmath>

#include "lpd/errors.h"
#include "lpd/kernels/conv.h"
#include "lpd/kernels/norm.h"

namespace lpd {
namespace {

constexpr float kGnEps = 1e-6f;
constexpr int64_t kGroups = 32;

void check(kernels::Status s, const char* what) {
  if (s != kernels::Status::kOk)
    fail(ErrorKind::kInternal, std::string(what) + " kernel failed: " + kernels::status_string(s));
}

}  // namespace

struct VqDecoder::Buffers {
  std::vector<float> t0, t1, scratch, q, k, v;
};

VqDecoder::Conv VqDecoder::load_conv(const SafeTensors& st, const std::string& prefix, int64_t c_out, int64_t c_in,
                                     int64_t k) {
  Conv c;
  c.kernel = k;
  std::vector<float> w = st.to_float(prefix + ".weight", {c_out, c_in, k, k});
  c.lin.load_raw(w, st.to_float(prefix + ".bias", {c_out}), c_out, c_in * k * k);
  return c;
}

VqDecoder::Resnet VqDecoder::load_resnet(const SafeTensors& st, const std::string& p, int64_t c_in, int64_t c_out) {
  Resnet r;
  r.norm1.load(st, p + ".norm1", c_in);
  r.conv1 = load_conv(st, p + ".conv1", c_out, c_in, 3);
  r.norm2.load(st, p + ".norm2", c_out);
  r.conv2 = load_conv(st, p + ".conv2", c_out, c_out, 3);
  r.has_shortcut = c_in != c_out;
  if (r.has_shortcut) r.nin_shortcut = load_conv(st, p + ".nin_shortcut", c_out, c_in, 1);
  return r;
}

VqDecoder::Attn VqDecoder::load_attn(const SafeTensors& st, const std::string& p, int64_t c) {
  Attn a;
  a.norm.load(st, p + ".norm", c);
  a.q = load_conv(st, p + ".q", c, c, 1);
  a.k = load_conv(st, p + ".k", c, c, 1);
  a.v = load_conv(st, p + ".v", c, c, 1);
  a.proj_out = load_conv(st, p + ".proj_out", c, c, 1);
  return a;
}

VqDecoder VqDecoder::load(const Bundle& bundle) {
  const SafeTensors& st = bundle.weights;
  VqDecoder d;
  d.config_ = bundle.vq;
  const VqConfig& c = d.config_;
  d.codebook_ = st.to_float("vq.codebook", {c.codebook_size, c.codebook_dim});
  for (int64_t i = 0; i < c.codebook_size; ++i) {
    float* row = d.codebook_.data() + i * c.codebook_dim;
    float sq = 0.0f;
    for (int64_t j = 0; j < c.codebook_dim; ++j) sq += row[j] * row[j];
    const float norm = std::max(std::sqrt(sq), 1e-12f);
    for (int64_t j = 0; j < c.codebook_dim; ++j) row[j] = row[j] / norm;
  }
  d.post_quant_conv_ = load_conv(st, "vq.post_quant_conv", c.z_channels, c.codebook_dim, 1);
  const int64_t levels = static_cast<int64_t>(c.ch_mult.size());
  int64_t block_in = c.ch * c.ch_mult.back();
  d.conv_in_ = load_conv(st, "vq.decoder.conv_in", block_in, c.z_channels, 3);
  d.mid0_ = load_resnet(st, "vq.decoder.mid.0", block_in, block_in);
  d.mid1_ = load_attn(st, "vq.decoder.mid.1", block_in);
  d.mid2_ = load_resnet(st, "vq.decoder.mid.2", block_in, block_in);
  for (int64_t i = 0; i < levels; ++i) {
    Level lv;
    const int64_t block_out = c.ch * c.ch_mult[static_cast<size_t>(levels - 1 - i)];
    const std::string p = "vq.decoder.conv_blocks." + std::to_string(i);
    for (int64_t r = 0; r < c.decoder_res_blocks; ++r) {
      lv.res.push_back(load_resnet(st, p + ".res." + std::to_string(r), block_in, block_out));
      block_in = block_out;
      if (i == 0) lv.attn.push_back(load_attn(st, p + ".attn." + std::to_string(r), block_in));
    }
    lv.has_upsample = i != levels - 1;
    if (lv.has_upsample) lv.upsample = load_conv(st, p + ".upsample.conv", block_in, block_in, 3);
    d.levels_.push_back(std::move(lv));
  }
  d.norm_out_.load(st, "vq.decoder.norm_out", block_in);
  d.conv_out_ = load_conv(st, "vq.decoder.conv_out", 3, block_in, 3);
  return d;
}

void VqDecoder::conv(const Conv& c, const float* x, int64_t h, int64_t w, float* out, bool accumulate,
                     Buffers& b) const {
  const size_t need = kernels::conv2d_scratch_floats(h, w, c.lin.in_features / (c.kernel * c.kernel), c.kernel);
  if (b.scratch.size() < need) b.scratch.resize(need);
  check(kernels::conv2d(x, h, w, c.lin.in_features / (c.kernel * c.kernel), c.lin.packed.data(), c.lin.bias.data(),
                        c.lin.out_features, c.kernel,
                        accumulate ? kernels::Epilogue::kAccumulate : kernels::Epilogue::kStore, b.scratch.data(), out),
        "conv2d");
}

// x [h*w, c_in] -> x [h*w, c_out] in place (x is resized).
void VqDecoder::resnet(const Resnet& r, std::vector<float>& x, int64_t h, int64_t w, int64_t c_in, Buffers& b) const {
  const int64_t pixels = h * w, c_out = r.conv1.lin.out_features;
  b.t0.resize(static_cast<size_t>(pixels * std::max(c_in, c_out)));
  b.t1.resize(static_cast<size_t>(pixels * c_out));
  check(kernels::group_norm(x.data(), r.norm1.weight.data(), r.norm1.bias.data(), kGnEps, true, b.t0.data(), pixels,
                            c_in, kGroups),
        "group_norm");
  conv(r.conv1, b.t0.data(), h, w, b.t1.data(), false, b);
  check(kernels::group_norm(b.t1.data(), r.norm2.weight.data(), r.norm2.bias.data(), kGnEps, true, b.t1.data(),
                            pixels, c_out, kGroups),
        "group_norm");
  if (r.has_shortcut) {
    conv(r.nin_shortcut, x.data(), h, w, b.t0.data(), false, b);  // t0 = shortcut(x)
    conv(r.conv2, b.t1.data(), h, w, b.t0.data(), true, b);       // t0 += conv2(...)
    x.assign(b.t0.begin(), b.t0.begin() + pixels * c_out);
  } else {
    conv(r.conv2, b.t1.data(), h, w, x.data(), true, b);  // x += conv2(...)
  }
}

void VqDecoder::attn(const Attn& a, std::vector<float>& x, int64_t h, int64_t w, int64_t c, Buffers& b) const {
  const int64_t pixels = h * w;
  const size_t n = static_cast<size_t>(pixels * c);
  b.t0.resize(n);
  b.q.resize(n);
  b.k.resize(n);
  b.v.resize(n);
  check(kernels::group_norm(x.data(), a.norm.weight.data(), a.norm.bias.data(), kGnEps, false, b.t0.data(), pixels, c,
                            kGroups),
        "group_norm");
  conv(a.q, b.t0.data(), h, w, b.q.data(), false, b);
  conv(a.k, b.t0.data(), h, w, b.k.data(), false, b);
  conv(a.v, b.t0.data(), h, w, b.v.data(), false, b);
  const size_t need = kernels::spatial_attention_scratch_floats(pixels, c);
  if (b.scratch.size() < need) b.scratch.resize(need);
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(c)));
  check(kernels::spatial_attention(b.q.data(), b.k.data(), b.v.data(), pixels, c, scale, b.scratch.data(), b.t0.data()),
        "spatial_attention");
  conv(a.proj_out, b.t0.data(), h, w, x.data(), true, b);
}

void VqDecoder::decode(const int64_t* tokens, int64_t grid, uint8_t* rgb) const {
  const VqConfig& c = config_;
  Buffers b;
  int64_t h = grid, w = grid;
  std::vector<float> z(static_cast<size_t>(h * w * c.codebook_dim));
  for (int64_t p = 0; p < h * w; ++p) {
    if (tokens[p] < 0 || tokens[p] >= c.codebook_size) fail(ErrorKind::kInvalidArgument, "token id out of range");
    std::copy_n(codebook_.data() + tokens[p] * c.codebook_dim, c.codebook_dim, z.data() + p * c.codebook_dim);
  }
  std::vector<float> zq(static_cast<size_t>(h * w * c.z_channels));
  conv(post_quant_conv_, z.data(), h, w, zq.data(), false, b);
  int64_t ch = conv_in_.lin.out_features;
  std::vector<float> x(static_cast<size_t>(h * w * ch));
  conv(conv_in_, zq.data(), h, w, x.data(), false, b);
  resnet(mid0_, x, h, w, ch, b);
  attn(mid1_, x, h, w, ch, b);
  resnet(mid2_, x, h, w, ch, b);
  for (const Level& lv : levels_) {
    for (size_t r = 0; r < lv.res.size(); ++r) {
      resnet(lv.res[r], x, h, w, ch, b);
      ch = lv.res[r].conv1.lin.out_features;
      if (!lv.attn.empty()) attn(lv.attn[r], x, h, w, ch, b);
    }
    if (lv.has_upsample) {
      std::vector<float> up(static_cast<size_t>(4 * h * w * ch));
      check(kernels::upsample_nearest2x(x.data(), h, w, ch, up.data()), "upsample");
      h *= 2;
      w *= 2;
      x.resize(up.size());
      conv(lv.upsample, up.data(), h, w, x.data(), false, b);
    }
  }
  check(kernels::group_norm(x.data(), norm_out_.weight.data(), norm_out_.bias.data(), kGnEps, true, x.data(), h * w,
                            ch, kGroups),
        "group_norm");
  std::vector<float> out(static_cast<size_t>(h * w * 3));
  conv(conv_out_, x.data(), h, w, out.data(), false, b);
  for (size_t i = 0; i < out.size(); ++i) {
    float v = (out[i] + 1.0f) / 2.0f * 255.0f;
    v = std::min(std::max(v, 0.0f), 255.0f);
    rgb[i] = static_cast<uint8_t>(std::nearbyint(v));
  }
}

}  // namespace lpd
