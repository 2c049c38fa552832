// CPU LPD transformer: weight loading/packing and the ragged-batch step (lpd/transformer.h).
//
// Per step: x = z_proj_ln(E[ids] + pos[pos_ids]); per layer: h = LN1(x); qkv = h Wqkv^T + b;
// write K/V of every row at its slot (queries' K/V are provisional and get overwritten by the
// real tokens next step); attention with per-row visible lengths; x += proj; x += fc2(gelu(fc1(LN2 x))).
// Finally LN and the head on the logit rows only.
#include "lpd/transformer.h"

#include <cmath>

#include "lpd/errors.h"
#include "lpd/kernels/attention.h"
#include "lpd/kernels/embedding.h"
#include "lpd/kernels/gemm.h"
#include "lpd/kernels/kv_cache.h"
#include "lpd/kernels/norm.h"

namespace lpd {
namespace {

constexpr float kLnEps = 1e-6f;

void check(kernels::Status s, const char* what) {
  if (s != kernels::Status::kOk)
    fail(ErrorKind::kInternal, std::string(what) + " kernel failed: " + kernels::status_string(s));
}

}  // namespace

void Linear::load_raw(const std::vector<float>& weight, std::vector<float> b, int64_t out_f, int64_t in_f) {
  out_features = out_f;
  in_features = in_f;
  packed.assign(kernels::gemm_packed_size(out_f, in_f), 0.0f);
  check(kernels::gemm_pack(weight.data(), out_f, in_f, in_f, 1, packed.data()), "gemm_pack");
  bias = std::move(b);
}

void Linear::load(const SafeTensors& st, const std::string& prefix, int64_t out_f, int64_t in_f, bool has_bias) {
  load_raw(st.to_float(prefix + ".weight", {out_f, in_f}),
           has_bias ? st.to_float(prefix + ".bias", {out_f}) : std::vector<float>{}, out_f, in_f);
}

void Norm::load(const SafeTensors& st, const std::string& prefix, int64_t dim) {
  weight = st.to_float(prefix + ".weight", {dim});
  bias = st.to_float(prefix + ".bias", {dim});
}

TransformerWeights TransformerWeights::load(const Bundle& bundle, bool pack) {
  const SafeTensors& st = bundle.weights;
  TransformerWeights w;
  const TransformerConfig& c = w.config = bundle.lpd;
  const int64_t d = c.dim;
  if (!pack) return w;
  w.table = st.to_float("embed.table", {c.table_rows(), d});
  const auto& pos_shape = st.info("embed.pos").shape;
  w.pos = st.to_float("embed.pos", pos_shape.size() == 3 ? std::vector<int64_t>{1, c.num_tokens + 1, d}
                                                          : std::vector<int64_t>{c.num_tokens + 1, d});
  w.embed_norm.load(st, "embed.norm", d);
  w.layers.resize(static_cast<size_t>(c.depth));
  for (int64_t i = 0; i < c.depth; ++i) {
    const std::string p = "layers." + std::to_string(i) + ".";
    auto& l = w.layers[static_cast<size_t>(i)];
    l.attn_norm.load(st, p + "attn_norm", d);
    l.qkv.load(st, p + "qkv", 3 * d, d, true);
    l.proj.load(st, p + "proj", d, d, true);
    l.mlp_norm.load(st, p + "mlp_norm", d);
    l.fc1.load(st, p + "fc1", c.mlp_hidden, d, true);
    l.fc2.load(st, p + "fc2", d, c.mlp_hidden, true);
  }
  w.final_norm.load(st, "final_norm", d);
  w.head.load(st, "head", c.vocab_size, d, false);
  return w;
}

void StepPlan::clear() {
  embed_ids.clear();
  pos_ids.clear();
  slot_mapping.clear();
  row_seq.clear();
  row_pos.clear();
  visible_len.clear();
  block_tables.clear();
  logit_rows.clear();
  max_blocks = 0;
}

static void linear(const Linear& l, const float* x, int64_t rows, float* y, kernels::Epilogue epi) {
  check(kernels::gemm(x, l.in_features, l.packed.data(), l.bias.empty() ? nullptr : l.bias.data(), y,
                      l.out_features, rows, l.out_features, l.in_features, epi),
        "gemm");
}

void StepDecoder::run(const StepPlan& plan, float* logits) {
  const TransformerConfig& c = w_.config;
  const int64_t rows = plan.num_rows(), d = c.dim;
  if (rows == 0) return;
  x_.resize(static_cast<size_t>(rows * d));
  h_.resize(static_cast<size_t>(rows * d));
  attn_.resize(static_cast<size_t>(rows * d));
  qkv_.resize(static_cast<size_t>(rows * 3 * d));
  mlp_.resize(static_cast<size_t>(rows * c.mlp_hidden));

  kernels::EmbedParams ep{w_.table.data(), w_.pos.data(), w_.embed_norm.weight.data(), w_.embed_norm.bias.data(),
                          kLnEps, plan.embed_ids.data(), plan.pos_ids.data(), rows, d, c.table_rows(),
                          c.num_tokens + 1, x_.data()};
  check(kernels::embed_rows(ep), "embed_rows");

  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(c.head_dim())));
  for (int64_t i = 0; i < c.depth; ++i) {
    const auto& l = w_.layers[static_cast<size_t>(i)];
    check(kernels::layer_norm(x_.data(), d, l.attn_norm.weight.data(), l.attn_norm.bias.data(), kLnEps, h_.data(), d,
                              rows, d),
          "layer_norm");
    linear(l.qkv, h_.data(), rows, qkv_.data(), kernels::Epilogue::kStore);
    check(kernels::kv_cache_write(qkv_.data() + d, qkv_.data() + 2 * d, 3 * d, plan.slot_mapping.data(), rows, d,
                                  cache_.k(i), cache_.v(i)),
          "kv_cache_write");
    kernels::PagedAttentionParams ap{qkv_.data(), 3 * d, cache_.k(i), cache_.v(i), plan.block_tables.data(),
                                     plan.max_blocks, plan.row_seq.data(), plan.visible_len.data(), rows, c.heads,
                                     c.head_dim(), cache_.block_size(), scale, attn_.data(), d};
    check(kernels::paged_attention(ap), "paged_attention");
    linear(l.proj, attn_.data(), rows, x_.data(), kernels::Epilogue::kAccumulate);
    check(kernels::layer_norm(x_.data(), d, l.mlp_norm.weight.data(), l.mlp_norm.bias.data(), kLnEps, h_.data(), d,
                              rows, d),
          "layer_norm");
    linear(l.fc1, h_.data(), rows, mlp_.data(), kernels::Epilogue::kGelu);
    linear(l.fc2, mlp_.data(), rows, x_.data(), kernels::Epilogue::kAccumulate);
  }
  const int64_t out_rows = static_cast<int64_t>(plan.logit_rows.size());
  gathered_.resize(static_cast<size_t>(out_rows * d));
  for (int64_t r = 0; r < out_rows; ++r) {
    const float* src = x_.data() + plan.logit_rows[static_cast<size_t>(r)] * d;
    std::copy(src, src + d, gathered_.data() + r * d);
  }
  check(kernels::layer_norm(gathered_.data(), d, w_.final_norm.weight.data(), w_.final_norm.bias.data(), kLnEps,
                            gathered_.data(), d, out_rows, d),
        "layer_norm");
  linear(w_.head, gathered_.data(), out_rows, logits, kernels::Epilogue::kStore);
}

}  // namespace lpd
