// GPU VQ decoder (lpd/cuda_vq_decoder.h). Same network and order as the CPU decoder
// (vq_decoder.cpp): table lookup, conv_in, mid (res, attn, res), levels from the lowest
// resolution up, GroupNorm + swish, conv_out, uint8.
//
// Biases of the cuDNN convolutions are never added by cuDNN: a conv's bias stays "pending" on
// its output buffer and the next operator adds it to its input (GroupNorm statistics, folded
// back into the residual stream x; GroupNorm apply; upsampling; the uint8 conversion), rounding
// to bf16 as a bf16 conv + bias would. `pending` below tracks the bias owed by x. The 1x1
// convolutions are cuBLASLt GEMMs with the bias in their epilogue. Each chunk size's pass is
// replayed as a CUDA graph from its third use on.
#include "lpd/cuda_vq_decoder.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <utility>
#include <vector>

#include "cuda_util.h"
#include "lpd/errors.h"
#include "lpd/kernels/conv.h"
#include "lpd/kernels/gemm.h"
#include "lpd/kernels/norm.h"

namespace lpd {
namespace {

namespace kc = kernels::cuda;
using kc::bf16;
using cuda_util::check;
using cuda_util::cuda_check;
using cuda_util::DeviceBuffer;
using cuda_util::GraphCache;
using cuda_util::WeightArena;

constexpr float kGnEps = 1e-6f;
constexpr int64_t kGroups = 32;
constexpr size_t kConvWorkspaceBytes = size_t{256} << 20;
constexpr int64_t kMaxBatch = 64;

}  // namespace

struct CudaVqDecoder::Impl {
  VqConfig c;
  int64_t grid = 0, max_batch = 0;
  cudaStream_t stream = nullptr;
  kc::ConvContext* conv_ctx = nullptr;
  kc::GemmContext* gemm_ctx = nullptr;
  std::unique_ptr<WeightArena> weights;

  struct Conv {  // 3x3: [c_out, 3, 3, c_in]; 1x1: [c_out, c_in] (a GEMM)
    const bf16 *w = nullptr, *b = nullptr;
    int64_t c_in = 0, c_out = 0, kernel = 1;
  };
  struct GroupNorm {
    const float *gamma = nullptr, *beta = nullptr;
  };
  struct Resnet {
    GroupNorm norm1, norm2;
    Conv conv1, conv2, nin_shortcut;
    bool has_shortcut = false;
  };
  struct Attn {
    GroupNorm norm;
    Conv qkv, proj_out;  // qkv: the q, k, v 1x1 convolutions as one [3c, c] GEMM
  };
  struct Level {
    std::vector<Resnet> res;
    std::vector<Attn> attn;
    bool has_upsample = false;
    Conv upsample;
  };
  const bf16* table = nullptr;  // [codebook_size, z_channels] = post_quant_conv(normalised codebook)
  Conv conv_in, conv_out;       // conv_out padded to 8 output channels (3 used)
  Resnet mid0, mid2;
  Attn mid1;
  std::vector<Level> levels;
  GroupNorm norm_out;

  // activations: four buffers of max_batch x the largest level, ids, pixels, GroupNorm statistics
  DeviceBuffer<bf16> buf[4];
  DeviceBuffer<int32_t> ids;
  DeviceBuffer<uint8_t> rgb;
  DeviceBuffer<float> gn_work, gn_stats;
  uint8_t* rgb_host = nullptr;  // pinned
  int32_t* ids_host = nullptr;  // pinned
  GraphCache<int64_t> graphs;  // forward() per chunk size

  // Here rather than in ~CudaVqDecoder so that a constructor throwing part-way releases what it
  // made (null members are skipped). The stream is drained first and the graphs go before it;
  // the device buffers and the weight arena are freed by their own destructors after this body.
  ~Impl() {
    if (stream) cudaStreamSynchronize(stream);
    graphs.clear();
    if (rgb_host) cudaFreeHost(rgb_host);
    if (ids_host) cudaFreeHost(ids_host);
    kc::conv_context_destroy(conv_ctx);
    kc::gemm_context_destroy(gemm_ctx);
    if (stream) cudaStreamDestroy(stream);
  }

  template <typename T>
  const T* upload(const std::vector<T>& host) {
    return weights->upload(host);
  }
  const bf16* upload_bf16(const std::vector<float>& f) { return weights->upload_bf16(f); }

  // torch [c_out, c_in, k, k] -> [c_out_padded, k, k, c_in] (3x3) or [c_out, c_in] (1x1).
  Conv load_conv(const SafeTensors& st, const std::string& p, int64_t c_out, int64_t c_in, int64_t k,
                 int64_t c_out_padded = 0) {
    if (c_in % 8 || (c_out % 8 && !c_out_padded))
      fail(ErrorKind::kInvalidArgument, "device \"cuda\": VQ decoder channel counts must be multiples of 8 (" + p + ")");
    Conv cv;
    cv.c_in = c_in;
    cv.c_out = c_out_padded ? c_out_padded : c_out;
    cv.kernel = k;
    const std::vector<float> w = st.to_float(p + ".weight", {c_out, c_in, k, k});
    std::vector<float> r(static_cast<size_t>(cv.c_out * k * k * c_in), 0.0f);
    for (int64_t o = 0; o < c_out; ++o)
      for (int64_t i = 0; i < c_in; ++i)
        for (int64_t y = 0; y < k; ++y)
          for (int64_t x = 0; x < k; ++x) r[((o * k + y) * k + x) * c_in + i] = w[((o * c_in + i) * k + y) * k + x];
    cv.w = upload_bf16(r);
    cv.b = upload_bf16(st.to_float(p + ".bias", {c_out}));
    return cv;
  }
  GroupNorm load_norm(const SafeTensors& st, const std::string& p, int64_t ch) {
    return {upload(st.to_float(p + ".weight", {ch})), upload(st.to_float(p + ".bias", {ch}))};
  }
  Resnet load_resnet(const SafeTensors& st, const std::string& p, int64_t c_in, int64_t c_out) {
    Resnet r;
    r.norm1 = load_norm(st, p + ".norm1", c_in);
    r.conv1 = load_conv(st, p + ".conv1", c_out, c_in, 3);
    r.norm2 = load_norm(st, p + ".norm2", c_out);
    r.conv2 = load_conv(st, p + ".conv2", c_out, c_out, 3);
    r.has_shortcut = c_in != c_out;
    if (r.has_shortcut) r.nin_shortcut = load_conv(st, p + ".nin_shortcut", c_out, c_in, 1);
    return r;
  }
  Attn load_attn(const SafeTensors& st, const std::string& p, int64_t ch) {
    Attn a;
    a.norm = load_norm(st, p + ".norm", ch);
    std::vector<float> w, b;
    for (const char* name : {".q", ".k", ".v"}) {
      const std::vector<float> wi = st.to_float(p + name + ".weight", {ch, ch, 1, 1});
      const std::vector<float> bi = st.to_float(p + name + ".bias", {ch});
      w.insert(w.end(), wi.begin(), wi.end());
      b.insert(b.end(), bi.begin(), bi.end());
    }
    a.qkv = {upload_bf16(w), upload_bf16(b), ch, 3 * ch, 1};
    a.proj_out = load_conv(st, p + ".proj_out", ch, ch, 1);
    return a;
  }

  // -- the forward pass over one chunk of n images; x = buf[0] is the residual stream --------

  bf16 *x = nullptr, *t = nullptr, *h = nullptr, *s = nullptr;  // the four buffers (x and s swap)
  const bf16* pending = nullptr;                                   // bias owed by x

  void stats(bf16* in, const bf16* bias, bool fold, int64_t n, int64_t pixels, int64_t ch) {
    check(kc::group_norm_stats(in, bias, fold, n, pixels, ch, kGroups, kGnEps, gn_work.ptr, gn_stats.ptr, stream),
          "group_norm_stats");
  }
  void apply(const bf16* in, const bf16* bias, const GroupNorm& g, bool swish, int64_t n, int64_t pixels, int64_t ch,
             bf16* out) {
    check(kc::group_norm_apply(in, bias, gn_stats.ptr, g.gamma, g.beta, swish, n, pixels, ch, kGroups, out,
                               stream),
          "group_norm_apply");
  }
  void conv3(const Conv& cv, const bf16* in, int64_t n, int64_t hh, int64_t ww, bf16* out, bool accumulate,
             bf16* scratch) {
    check(kc::conv2d(conv_ctx, {in, n, hh, ww, cv.c_in, cv.w, cv.c_out, cv.kernel, out, accumulate, scratch}, stream),
          "conv2d");
  }
  // out[rows, c_out] (+)= in[rows, c_in] W^T + b
  void conv1x1(const Conv& cv, const bf16* in, int64_t rows, bf16* out, bool accumulate) {
    check(kc::gemm(gemm_ctx, {in, cv.c_in, cv.w, cv.c_in, cv.b, out, cv.c_out, rows, cv.c_out, cv.c_in, false,
                              accumulate},
                   stream),
          "gemm 1x1 conv");
  }
  // x's pending bias into x, then the statistics of x.
  void settle_x(int64_t n, int64_t pixels, int64_t ch) {
    stats(x, pending, true, n, pixels, ch);
    pending = nullptr;
  }

  void resnet(const Resnet& r, int64_t n, int64_t hh, int64_t ww, int64_t& ch) {
    const int64_t pixels = hh * ww, c_out = r.conv1.c_out;
    settle_x(n, pixels, ch);
    apply(x, nullptr, r.norm1, true, n, pixels, ch, t);
    conv3(r.conv1, t, n, hh, ww, h, false, nullptr);
    stats(h, r.conv1.b, false, n, pixels, c_out);
    apply(h, r.conv1.b, r.norm2, true, n, pixels, c_out, t);
    if (r.has_shortcut) {
      conv1x1(r.nin_shortcut, x, n * pixels, s, false);
      std::swap(x, s);
    }
    conv3(r.conv2, t, n, hh, ww, x, true, h);  // x += conv2(t); h is free again (scratch for the first call)
    pending = r.conv2.b;
    ch = c_out;
  }

  void attn(const Attn& a, int64_t n, int64_t hh, int64_t ww, int64_t ch) {
    const int64_t pixels = hh * ww;
    settle_x(n, pixels, ch);
    apply(x, nullptr, a.norm, false, n, pixels, ch, t);
    conv1x1(a.qkv, t, n * pixels, h, false);  // h = [q | k | v] per pixel
    auto* scores = reinterpret_cast<float*>(s);
    kc::GemmArgs qk{h, 3 * ch, h + ch, 3 * ch, nullptr, scores, pixels, pixels, pixels, ch, true, false};
    qk.batch = n;
    qk.stride_a = qk.stride_w = pixels * 3 * ch;
    qk.stride_c = pixels * pixels;
    check(kc::gemm(gemm_ctx, qk, stream), "gemm q.k");
    check(kc::softmax_rows(scores, n * pixels, pixels, static_cast<float>(1.0 / std::sqrt(static_cast<double>(ch))), t,
                           stream),
          "softmax_rows");
    kc::GemmArgs pv{t, pixels, h + 2 * ch, 3 * ch, nullptr, s, ch, pixels, ch, pixels, false, false};
    pv.w_kn = true;
    pv.batch = n;
    pv.stride_a = pixels * pixels;
    pv.stride_w = pixels * 3 * ch;
    pv.stride_c = pixels * ch;
    check(kc::gemm(gemm_ctx, pv, stream), "gemm p.v");
    conv1x1(a.proj_out, s, n * pixels, x, true);
  }

  void forward(int64_t n, uint8_t* out_rgb) {
    x = buf[0].ptr;
    t = buf[1].ptr;
    h = buf[2].ptr;
    s = buf[3].ptr;
    int64_t hh = grid, ww = grid, ch = conv_in.c_out;
    check(kc::gather_rows(table, ids.ptr, n * hh * ww, c.z_channels, t, stream), "gather_rows");
    conv3(conv_in, t, n, hh, ww, x, false, nullptr);
    pending = conv_in.b;
    resnet(mid0, n, hh, ww, ch);
    attn(mid1, n, hh, ww, ch);
    resnet(mid2, n, hh, ww, ch);
    for (const Level& lv : levels) {
      for (size_t r = 0; r < lv.res.size(); ++r) {
        resnet(lv.res[r], n, hh, ww, ch);
        if (!lv.attn.empty()) attn(lv.attn[r], n, hh, ww, ch);
      }
      if (lv.has_upsample) {
        check(kc::upsample_nearest2x(x, pending, n, hh, ww, ch, t, stream), "upsample");
        hh *= 2;
        ww *= 2;
        conv3(lv.upsample, t, n, hh, ww, x, false, nullptr);
        pending = lv.upsample.b;
      }
    }
    const int64_t pixels = hh * ww;
    stats(x, pending, false, n, pixels, ch);
    apply(x, pending, norm_out, true, n, pixels, ch, t);
    conv3(conv_out, t, n, hh, ww, h, false, nullptr);
    check(kc::to_rgb(h, conv_out.c_out, conv_out.b, n * pixels, out_rgb, stream), "to_rgb");
  }
};

CudaVqDecoder::CudaVqDecoder(const Bundle& bundle, int64_t grid, size_t activation_bytes)
    : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  m.c = bundle.vq;
  m.grid = grid;
  const VqConfig& c = m.c;
  if (c.z_channels % 8)
    fail(ErrorKind::kInvalidArgument, "device \"cuda\": VQ decoder channel counts must be multiples of 8 (z_channels)");
  cuda_check(cudaStreamCreateWithFlags(&m.stream, cudaStreamNonBlocking), "stream");
  m.conv_ctx = kc::conv_context_create(kConvWorkspaceBytes);
  if (!m.conv_ctx) fail(ErrorKind::kInternal, "cuDNN initialisation failed");
  m.gemm_ctx = kc::gemm_context_create();
  if (!m.gemm_ctx) fail(ErrorKind::kInternal, "cuBLASLt initialisation failed");

  const SafeTensors& st = bundle.weights;
  size_t cap = static_cast<size_t>(c.codebook_size * c.z_channels) * 2 + 4096;
  for (const auto& [name, info] : st.tensors())
    if (name.rfind("vq.", 0) == 0) cap += static_cast<size_t>(info.numel()) * 4 + 256;
  m.weights = std::make_unique<WeightArena>(cap);

  // The lookup table: normalise each code (L2, eps 1e-12), then post_quant_conv, in float32.
  {
    std::vector<float> book = st.to_float("vq.codebook", {c.codebook_size, c.codebook_dim});
    const std::vector<float> w = st.to_float("vq.post_quant_conv.weight", {c.z_channels, c.codebook_dim, 1, 1});
    const std::vector<float> b = st.to_float("vq.post_quant_conv.bias", {c.z_channels});
    std::vector<float> table(static_cast<size_t>(c.codebook_size * c.z_channels));
    for (int64_t i = 0; i < c.codebook_size; ++i) {
      float* row = book.data() + i * c.codebook_dim;
      float sq = 0.0f;
      for (int64_t j = 0; j < c.codebook_dim; ++j) sq += row[j] * row[j];
      const float norm = std::max(std::sqrt(sq), 1e-12f);
      for (int64_t j = 0; j < c.codebook_dim; ++j) row[j] = row[j] / norm;
      for (int64_t o = 0; o < c.z_channels; ++o) {
        float acc = 0.0f;
        for (int64_t j = 0; j < c.codebook_dim; ++j) acc += row[j] * w[o * c.codebook_dim + j];
        table[i * c.z_channels + o] = acc + b[o];
      }
    }
    m.table = m.upload_bf16(table);
  }
  const int64_t num_levels = static_cast<int64_t>(c.ch_mult.size());
  int64_t block_in = c.ch * c.ch_mult.back();
  int64_t largest = grid * grid * std::max(block_in, c.z_channels);  // elements per image, any buffer
  size_t gn_work = 0;  // GroupNorm partials per image, the most any statistics pass needs
  auto note_gn = [&](int64_t pixels, int64_t ch) {
    gn_work = std::max(gn_work, kc::group_norm_workspace_floats(1, pixels, ch, kGroups));
  };
  note_gn(grid * grid, block_in);
  m.conv_in = m.load_conv(st, "vq.decoder.conv_in", block_in, c.z_channels, 3);
  m.mid0 = m.load_resnet(st, "vq.decoder.mid.0", block_in, block_in);
  m.mid1 = m.load_attn(st, "vq.decoder.mid.1", block_in);
  m.mid2 = m.load_resnet(st, "vq.decoder.mid.2", block_in, block_in);
  int64_t side = grid;
  for (int64_t i = 0; i < num_levels; ++i) {
    Impl::Level lv;
    const int64_t block_out = c.ch * c.ch_mult[static_cast<size_t>(num_levels - 1 - i)];
    const std::string p = "vq.decoder.conv_blocks." + std::to_string(i);
    for (int64_t r = 0; r < c.decoder_res_blocks; ++r) {
      lv.res.push_back(m.load_resnet(st, p + ".res." + std::to_string(r), block_in, block_out));
      note_gn(side * side, block_in);
      note_gn(side * side, block_out);
      block_in = block_out;
      if (i == 0) lv.attn.push_back(m.load_attn(st, p + ".attn." + std::to_string(r), block_in));
    }
    largest = std::max(largest, side * side * block_in);
    if (i == 0) largest = std::max(largest, 2 * side * side * side * side);  // attention scores (float32)
    if (i == 0) largest = std::max(largest, 3 * side * side * block_in);     // q | k | v
    lv.has_upsample = i != num_levels - 1;
    if (lv.has_upsample) {
      lv.upsample = m.load_conv(st, p + ".upsample.conv", block_in, block_in, 3);
      side *= 2;
      largest = std::max(largest, side * side * block_in);
    }
    m.levels.push_back(std::move(lv));
  }
  m.norm_out = m.load_norm(st, "vq.decoder.norm_out", block_in);
  m.conv_out = m.load_conv(st, "vq.decoder.conv_out", 3, block_in, 3, 8);
  largest = std::max(largest, side * side * 8);
  note_gn(side * side, block_in);

  m.max_batch = std::clamp<int64_t>(static_cast<int64_t>(activation_bytes / (4 * 2 * static_cast<size_t>(largest))), 1,
                                    kMaxBatch);
  const int64_t max_batch = m.max_batch;
  for (auto& b : m.buf) b.resize(static_cast<size_t>(max_batch * largest));
  m.ids.resize(static_cast<size_t>(max_batch * grid * grid));
  m.rgb.resize(static_cast<size_t>(max_batch * side * side * 3));
  m.gn_work.resize(static_cast<size_t>(max_batch) * gn_work);
  m.gn_stats.resize(static_cast<size_t>(max_batch * kGroups * 2));
  cuda_check(cudaMallocHost(&m.rgb_host, m.rgb.count), "cudaMallocHost");
  cuda_check(cudaMallocHost(&m.ids_host, m.ids.count * sizeof(int32_t)), "cudaMallocHost");
  device_bytes_ = static_cast<int64_t>(m.weights->capacity() + 4 * m.buf[0].count * 2 + m.ids.count * 4 + m.rgb.count +
                                       (m.gn_work.count + m.gn_stats.count) * 4 + kConvWorkspaceBytes);
}

CudaVqDecoder::~CudaVqDecoder() = default;  // Impl's destructor releases the GPU resources

int64_t CudaVqDecoder::image_size() const { return impl_->grid * impl_->c.downsample(); }

int64_t CudaVqDecoder::max_batch() const { return impl_->max_batch; }

void CudaVqDecoder::decode(const int64_t* tokens, int64_t batch, uint8_t* rgb) {
  Impl& m = *impl_;
  const int64_t n_tok = m.grid * m.grid, side = image_size(), image_bytes = side * side * 3;
  for (int64_t i = 0; i < batch * n_tok; ++i)
    if (tokens[i] < 0 || tokens[i] >= m.c.codebook_size) fail(ErrorKind::kInvalidArgument, "token id out of range");
  std::lock_guard<std::mutex> lock(mutex_);
  for (int64_t first = 0; first < batch; first += m.max_batch) {
    const int64_t n = std::min(m.max_batch, batch - first);
    for (int64_t i = 0; i < n * n_tok; ++i) m.ids_host[i] = static_cast<int32_t>(tokens[first * n_tok + i]);
    cuda_check(cudaMemcpyAsync(m.ids.ptr, m.ids_host, static_cast<size_t>(n * n_tok) * 4, cudaMemcpyHostToDevice,
                               m.stream),
               "ids upload");
    m.graphs.run(n, m.stream, true, [&] { m.forward(n, m.rgb.ptr); });
    cuda_check(cudaMemcpyAsync(m.rgb_host, m.rgb.ptr, static_cast<size_t>(n * image_bytes), cudaMemcpyDeviceToHost,
                               m.stream),
               "pixels download");
    cuda_check(cudaStreamSynchronize(m.stream), "sync");
    std::copy_n(m.rgb_host, n * image_bytes, rgb + first * image_bytes);
  }
}

}  // namespace lpd
