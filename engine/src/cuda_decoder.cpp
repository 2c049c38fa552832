// GPU step decoder (lpd/cuda_decoder.h). Residual stream float32 [rows, dim]; weights, LN
// outputs, qkv, attention output, the MLP hidden state and the KV cache of the decoder's dtype
// (bf16, or float32 in the float32 mode); logits float32. Per layer:
//   h = LN1(x) -> qkv = h Wqkv^T + b (bf16, bias in the GEMM epilogue) -> attention (which
//   also writes the rows' K/V to the paged cache) -> x += attn Wproj^T + b (float32 C,
//   beta = 1: the residual add is the GEMM's epilogue) -> h = LN2(x) -> m = gelu(h Wfc1^T + b)
//   -> x += m Wfc2^T + b.
// Then LN of the logit rows (gathered by the norm kernel), the head GEMM, and one sampling
// block per token. 8 launches per layer plus 5 per step, our own kernels as programmatic
// dependent launches (csrc/cuda/common.cuh; in the float32 mode attention and GELU are plain
// launches); inside a CUDA graph.
#include "lpd/cuda_decoder.h"

#include <cuda_runtime.h>

#include <cmath>
#include <cstring>

#include "lpd/errors.h"
#include "lpd/kernels/attention.h"
#include "lpd/kernels/embedding.h"
#include "lpd/kernels/gemm.h"
#include "lpd/kernels/norm.h"
#include "cuda_util.h"

namespace lpd {
namespace {

namespace kc = kernels::cuda;
using kc::bf16;
using kc::DType;
constexpr float kLnEps = 1e-6f;

using cuda_util::check;
using cuda_util::cuda_check;
using cuda_util::DeviceBuffer;
using cuda_util::GraphCache;
using cuda_util::WeightArena;
using cuda_util::to_bf16;

}  // namespace

struct CudaStepDecoder::Impl {
  TransformerConfig c;
  DType dt = DType::kBF16;
  int64_t es = 2;  // bytes of one element of dt
  int64_t block_size = 0, num_blocks = 0, arena = 0;
  bool use_graphs = true;
  cudaStream_t stream = nullptr;
  kc::GemmContext* gemm = nullptr;
  std::unique_ptr<WeightArena> weights;  // everything below
  const void *table, *pos, *head;  // of dt
  const float *embed_g, *embed_b, *final_g, *final_b;
  struct Layer {
    const float *ln1_g, *ln1_b, *ln2_g, *ln2_b, *proj_b, *fc2_b;
    const void *qkv_w, *qkv_b, *proj_w, *fc1_w, *fc1_b, *fc2_w;  // of dt
  };
  std::vector<Layer> layers;
  DeviceBuffer<char> k_cache, v_cache;  // [depth][num_blocks * block_size][dim] of dt
  DeviceBuffer<int32_t> tokens;
  // activations (capacity in rows)
  int64_t cap_rows = 0, cap_logits = 0;
  DeviceBuffer<float> x, logits;
  DeviceBuffer<char> h, qkv, attn, mlp;  // of dt
  // plan: one device buffer, two pinned staging buffers
  DeviceBuffer<char> plan_dev;
  char* staging[2] = {nullptr, nullptr};
  size_t staging_cap = 0;
  cudaEvent_t staging_done[2] = {nullptr, nullptr};
  int staging_next = 0;
  int64_t last_logit_rows = 0;
  using Shape = std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t>;
  GraphCache<Shape> graphs;

  // Here rather than in ~CudaStepDecoder so that a constructor throwing part-way releases what
  // it made (null members are skipped). The stream is drained first and the graphs go before
  // it; the device buffers and the weight arena are freed by their own destructors afterwards.
  ~Impl() {
    if (stream) cudaStreamSynchronize(stream);
    graphs.clear();
    for (auto& e : staging_done)
      if (e) cudaEventDestroy(e);
    for (auto& s : staging)
      if (s) cudaFreeHost(s);
    kc::gemm_context_destroy(gemm);
    if (stream) cudaStreamDestroy(stream);
  }

  template <typename T>
  const T* upload(const std::vector<T>& host) {
    return weights->upload(host);
  }
  // a weight (or a bias of a dt epilogue) as dt
  const void* upload_dt(const std::vector<float>& f) {
    return dt == DType::kF32 ? static_cast<const void*>(upload(f)) : weights->upload_bf16(f);
  }
  // a bias of a float32 epilogue: as dt holds it (rounded to bf16 in the bf16 mode), in float32
  const float* upload_dt_as_float(const std::vector<float>& f) {
    if (dt == DType::kF32) return upload(f);
    std::vector<float> r(f.size());
    for (size_t i = 0; i < f.size(); ++i) {
      const uint32_t u = static_cast<uint32_t>(to_bf16(f[i])) << 16;
      std::memcpy(&r[i], &u, 4);
    }
    return upload(r);
  }
  // element `i` of a dt buffer
  template <typename B>
  char* at(B& buf, int64_t i) {
    return buf.ptr + i * es;
  }
  kernels::Status layer_norm(const int32_t* row_index, const float* g, const float* b, int64_t rows) {
    const int64_t d = c.dim;
    return dt == DType::kF32
               ? kc::layer_norm(x.ptr, d, row_index, g, b, kLnEps, reinterpret_cast<float*>(h.ptr), d, rows, d, stream)
               : kc::layer_norm(x.ptr, d, row_index, g, b, kLnEps, reinterpret_cast<bf16*>(h.ptr), d, rows, d, stream);
  }
  kernels::Status gelu(int64_t n) {
    return dt == DType::kF32 ? kc::gelu_erf(reinterpret_cast<float*>(mlp.ptr), n, stream)
                             : kc::gelu_erf(reinterpret_cast<bf16*>(mlp.ptr), n, stream);
  }

  void ensure_rows(int64_t rows, int64_t logit_rows) {
    if (rows <= cap_rows && logit_rows <= cap_logits) return;
    graphs.clear();  // buffers move: graphs hold the old pointers
    cudaStreamSynchronize(stream);
    cap_rows = std::max(cap_rows, std::max<int64_t>(rows, 64));
    cap_logits = std::max(cap_logits, std::max<int64_t>(logit_rows, 16));
    const int64_t d = c.dim;
    x.resize(cap_rows * d);
    h.resize(cap_rows * d * es);
    attn.resize(cap_rows * d * es);
    qkv.resize(cap_rows * 3 * d * es);
    mlp.resize(cap_rows * c.mlp_hidden * es);
    logits.resize(cap_logits * c.vocab_size);
  }

  struct Offsets {
    size_t embed, pos, slots, vis, logit_rows, tables, tiles, jobs, total;
  };

  void forward(const Offsets& o, int64_t rows, int64_t out_rows, kc::AttentionTiles tiles, int64_t num_jobs,
               int64_t max_blocks) {
    const char* base = plan_dev.ptr;
    auto i32 = [&](size_t off) { return reinterpret_cast<const int32_t*>(base + off); };
    const int64_t d = c.dim, hd = c.head_dim();
    kc::EmbedParams ep{table, pos, embed_g, embed_b, kLnEps, i32(o.embed), i32(o.pos), tokens.ptr, rows, d,
                       c.table_rows(), c.num_tokens + 1, x.ptr, dt};
    check(kc::embed_rows(ep, stream), "embed_rows");
    const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(hd)));
    const size_t layer_slots = static_cast<size_t>(num_blocks * block_size * d);
    const bool f32 = dt == DType::kF32;  // float32 mode: every GEMM writes float32 (kc::gemm's kF32 needs it)
    for (int64_t i = 0; i < c.depth; ++i) {
      const Layer& l = layers[static_cast<size_t>(i)];
      char* kl = at(k_cache, i * layer_slots);
      char* vl = at(v_cache, i * layer_slots);
      check(layer_norm(nullptr, l.ln1_g, l.ln1_b, rows), "layer_norm");
      check(kc::gemm(gemm, {h.ptr, d, l.qkv_w, d, l.qkv_b, qkv.ptr, 3 * d, rows, 3 * d, d, f32, false, false, 1, 0, 0,
                            0, dt},
                     stream),
            "gemm qkv");
      kc::PagedAttentionParams ap{qkv.ptr, 3 * d, at(qkv, d), at(qkv, 2 * d), 3 * d, i32(o.slots), kl, vl,
                                  i32(o.tables), max_blocks, i32(o.vis), i32(o.tiles), tiles.count,
                                  tiles.tile_rows, rows, c.heads, hd, block_size, scale, attn.ptr, d, dt};
      check(kc::paged_attention(ap, stream), "paged_attention");
      check(kc::gemm(gemm, {attn.ptr, d, l.proj_w, d, l.proj_b, x.ptr, d, rows, d, d, true, true, false, 1, 0, 0, 0,
                            dt},
                     stream),
            "gemm proj");
      check(layer_norm(nullptr, l.ln2_g, l.ln2_b, rows), "layer_norm");
      check(kc::gemm(gemm, {h.ptr, d, l.fc1_w, d, l.fc1_b, mlp.ptr, c.mlp_hidden, rows, c.mlp_hidden, d, f32, false,
                            false, 1, 0, 0, 0, dt},
                     stream),
            "gemm fc1");
      check(gelu(rows * c.mlp_hidden), "gelu");
      check(kc::gemm(gemm, {mlp.ptr, c.mlp_hidden, l.fc2_w, c.mlp_hidden, l.fc2_b, x.ptr, d, rows, d, c.mlp_hidden,
                            true, true, false, 1, 0, 0, 0, dt},
                     stream),
            "gemm fc2");
    }
    check(layer_norm(i32(o.logit_rows), final_g, final_b, out_rows), "final layer_norm");
    check(kc::gemm(gemm, {h.ptr, d, head, d, nullptr, logits.ptr, c.vocab_size, out_rows, c.vocab_size, d, true,
                          false, false, 1, 0, 0, 0, dt},
                   stream),
          "gemm head");
    if (num_jobs)
      check(kc::sample_tokens(logits.ptr, c.vocab_size, reinterpret_cast<const kc::SampleJob*>(base + o.jobs),
                              num_jobs, tokens.ptr, stream),
            "sample_tokens");
  }
};

CudaStepDecoder::CudaStepDecoder(const Bundle& bundle, const TransformerConfig& config, int64_t num_blocks,
                                 int64_t block_size, int64_t token_arena, bool use_graphs, kc::DType dtype)
    : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  m.c = config;
  m.dt = dtype;
  m.es = kc::dtype_size(dtype);
  m.num_blocks = num_blocks;
  m.block_size = block_size;
  m.arena = token_arena;
  m.use_graphs = use_graphs;
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0)
    fail(ErrorKind::kInvalidArgument, "device \"cuda\": no CUDA device is available");
  if (config.head_dim() > kernels::cuda::kAttentionMaxHeadDim)
    fail(ErrorKind::kInvalidArgument, "device \"cuda\": head_dim above 256 is not supported");
  cuda_check(cudaStreamCreateWithFlags(&m.stream, cudaStreamNonBlocking), "stream");
  m.gemm = kc::gemm_context_create();
  if (!m.gemm) fail(ErrorKind::kInternal, "cuBLASLt initialisation failed");

  const SafeTensors& st = bundle.weights;
  const TransformerConfig& c = config;
  const int64_t d = c.dim, hid = c.mlp_hidden, es = m.es;
  const int64_t per_layer = 4 * d * 4 /*ln*/ + (3 * d * d + 3 * d) * es + (d * d) * es + d * 4 +
                            (hid * d + hid) * es + (d * hid) * es + d * 4;
  m.weights = std::make_unique<WeightArena>(static_cast<size_t>(c.table_rows() * d * es + (c.num_tokens + 1) * d * es +
                                                                4 * d * 4 + c.vocab_size * d * es + c.depth * per_layer) +
                                            static_cast<size_t>(32 + c.depth * 16) * 256);
  m.table = m.upload_dt(st.to_float("embed.table", {c.table_rows(), d}));
  const auto& pos_shape = st.info("embed.pos").shape;
  m.pos = m.upload_dt(st.to_float("embed.pos", pos_shape.size() == 3 ? std::vector<int64_t>{1, c.num_tokens + 1, d}
                                                                        : std::vector<int64_t>{c.num_tokens + 1, d}));
  m.embed_g = m.upload(st.to_float("embed.norm.weight", {d}));
  m.embed_b = m.upload(st.to_float("embed.norm.bias", {d}));
  for (int64_t i = 0; i < c.depth; ++i) {
    const std::string p = "layers." + std::to_string(i) + ".";
    Impl::Layer l;
    l.ln1_g = m.upload(st.to_float(p + "attn_norm.weight", {d}));
    l.ln1_b = m.upload(st.to_float(p + "attn_norm.bias", {d}));
    l.qkv_w = m.upload_dt(st.to_float(p + "qkv.weight", {3 * d, d}));
    l.qkv_b = m.upload_dt(st.to_float(p + "qkv.bias", {3 * d}));
    l.proj_w = m.upload_dt(st.to_float(p + "proj.weight", {d, d}));
    l.proj_b = m.upload_dt_as_float(st.to_float(p + "proj.bias", {d}));
    l.ln2_g = m.upload(st.to_float(p + "mlp_norm.weight", {d}));
    l.ln2_b = m.upload(st.to_float(p + "mlp_norm.bias", {d}));
    l.fc1_w = m.upload_dt(st.to_float(p + "fc1.weight", {hid, d}));
    l.fc1_b = m.upload_dt(st.to_float(p + "fc1.bias", {hid}));
    l.fc2_w = m.upload_dt(st.to_float(p + "fc2.weight", {d, hid}));
    l.fc2_b = m.upload_dt_as_float(st.to_float(p + "fc2.bias", {d}));
    m.layers.push_back(l);
  }
  m.final_g = m.upload(st.to_float("final_norm.weight", {d}));
  m.final_b = m.upload(st.to_float("final_norm.bias", {d}));
  m.head = m.upload_dt(st.to_float("head.weight", {c.vocab_size, d}));
  weight_bytes_ = static_cast<int64_t>(m.weights->used());

  const size_t cache = static_cast<size_t>(c.depth * num_blocks * block_size * d * es);
  m.k_cache.resize(cache);
  m.v_cache.resize(cache);
  m.tokens.resize(static_cast<size_t>(std::max<int64_t>(token_arena, 1)));
  cuda_check(cudaMemset(m.tokens.ptr, 0, m.tokens.count * sizeof(int32_t)), "memset");
  for (auto& e : m.staging_done) cuda_check(cudaEventCreateWithFlags(&e, cudaEventDisableTiming), "event");
}

CudaStepDecoder::~CudaStepDecoder() = default;  // Impl's destructor releases the GPU resources

void CudaStepDecoder::run(const StepPlan& plan, const std::vector<kc::SampleJob>& jobs) {
  Impl& m = *impl_;
  const int64_t rows = plan.num_rows(), out_rows = static_cast<int64_t>(plan.logit_rows.size());
  if (rows == 0) return;
  m.ensure_rows(rows, out_rows);
  std::vector<int32_t> tile_records(static_cast<size_t>(kc::kAttentionTileInts * rows));
  const kc::AttentionTiles tiles = kc::plan_attention_tiles(plan.row_seq.data(), plan.row_pos.data(),
                                                            plan.visible_len.data(), rows, tile_records.data());
  if (tiles.tile_rows == 0) fail(ErrorKind::kInternal, "step plan: a sequence's rows are not consecutive positions");
  const int64_t num_tables = static_cast<int64_t>(plan.block_tables.size()), num_jobs = static_cast<int64_t>(jobs.size());

  Impl::Offsets o{};
  size_t at = 0;
  auto take = [&](size_t bytes) {
    const size_t here = at;
    at = (at + bytes + 15) / 16 * 16;
    return here;
  };
  o.embed = take(rows * 4);
  o.pos = take(rows * 4);
  o.slots = take(rows * 4);
  o.vis = take(rows * 4);
  o.logit_rows = take(out_rows * 4);
  o.tables = take(num_tables * 4);
  o.tiles = take(tiles.count * kc::kAttentionTileInts * 4);
  o.jobs = take(num_jobs * sizeof(kc::SampleJob));
  o.total = at;

  if (o.total > m.staging_cap) {
    cuda_check(cudaStreamSynchronize(m.stream), "sync");
    for (auto& s : m.staging)
      if (s) cudaFreeHost(s);
    m.staging_cap = o.total * 2;
    for (auto& s : m.staging) cuda_check(cudaMallocHost(&s, m.staging_cap), "cudaMallocHost");
  }
  if (o.total > m.plan_dev.count) {
    m.graphs.clear();
    cuda_check(cudaStreamSynchronize(m.stream), "sync");
    m.plan_dev.count = 0;
    if (m.plan_dev.ptr) cudaFree(m.plan_dev.ptr);
    m.plan_dev.ptr = nullptr;
    m.plan_dev.resize(std::max<size_t>(o.total * 2, 1 << 16));
  }
  const int buf = m.staging_next;
  m.staging_next ^= 1;
  cuda_check(cudaEventSynchronize(m.staging_done[buf]), "event sync");  // the copy two steps ago is done
  char* s = m.staging[buf];
  auto put64 = [&](size_t off, const std::vector<int64_t>& v) {
    int32_t* d = reinterpret_cast<int32_t*>(s + off);
    for (size_t i = 0; i < v.size(); ++i) d[i] = static_cast<int32_t>(v[i]);
  };
  put64(o.embed, plan.embed_ids);
  put64(o.pos, plan.pos_ids);
  put64(o.slots, plan.slot_mapping);
  std::memcpy(s + o.vis, plan.visible_len.data(), rows * 4);
  put64(o.logit_rows, plan.logit_rows);
  std::memcpy(s + o.tables, plan.block_tables.data(), num_tables * 4);
  std::memcpy(s + o.tiles, tile_records.data(), tiles.count * kc::kAttentionTileInts * 4);
  if (num_jobs) std::memcpy(s + o.jobs, jobs.data(), num_jobs * sizeof(kc::SampleJob));
  cuda_check(cudaMemcpyAsync(m.plan_dev.ptr, s, o.total, cudaMemcpyHostToDevice, m.stream), "plan upload");
  cuda_check(cudaEventRecord(m.staging_done[buf], m.stream), "event record");

  const Impl::Shape shape{rows, out_rows, num_tables, tiles.count, tiles.tile_rows, num_jobs, plan.max_blocks};
  m.graphs.run(shape, m.stream, m.use_graphs,
               [&] { m.forward(o, rows, out_rows, tiles, num_jobs, plan.max_blocks); });
  m.last_logit_rows = out_rows;
}

void CudaStepDecoder::synchronize() { cuda_check(cudaStreamSynchronize(impl_->stream), "sync"); }

void CudaStepDecoder::logits_to_host(std::vector<float>& out) {
  Impl& m = *impl_;
  out.resize(static_cast<size_t>(m.last_logit_rows * m.c.vocab_size));
  if (out.empty()) return;
  cuda_check(cudaMemcpyAsync(out.data(), m.logits.ptr, out.size() * 4, cudaMemcpyDeviceToHost, m.stream), "logits");
  synchronize();
}

void CudaStepDecoder::tokens_to_host(int64_t first, int64_t count, int64_t* out) {
  Impl& m = *impl_;
  std::vector<int32_t> t(static_cast<size_t>(count));
  cuda_check(cudaMemcpyAsync(t.data(), m.tokens.ptr + first, count * 4, cudaMemcpyDeviceToHost, m.stream), "tokens");
  synchronize();
  for (int64_t i = 0; i < count; ++i) out[i] = t[static_cast<size_t>(i)];
}

void CudaStepDecoder::tokens_from_host(const std::vector<int32_t>& index, const std::vector<int32_t>& value) {
  Impl& m = *impl_;
  // Rare path (top-p rows): element-wise copies, stream-ordered, then wait so the host vectors can go.
  for (size_t i = 0; i < index.size(); ++i)
    cuda_check(cudaMemcpyAsync(m.tokens.ptr + index[i], &value[i], 4, cudaMemcpyHostToDevice, m.stream), "tokens");
  synchronize();
}

}  // namespace lpd
