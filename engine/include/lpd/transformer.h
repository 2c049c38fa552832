// The LPD transformer on the CPU: packed weights and the step decoder.
//
// StepDecoder::run executes one engine step over a ragged batch (ARCHITECTURE.md): the rows of
// every active sequence, whatever request, step index or schedule they belong to, are one
// [num_rows, dim] matrix, so each dense layer is one GEMM. The per-step plan (StepPlan: row
// ids, slot mapping, visible lengths, block tables, which rows need logits) is built once by the
// runtime and read by every layer.
#pragma once

#include <cstdint>
#include <vector>

#include "lpd/bundle.h"
#include "lpd/kv_pool.h"

namespace lpd {

// y = x W^T + b with W packed for lpd::kernels::gemm.
struct Linear {
  int64_t out_features = 0, in_features = 0;
  std::vector<float> packed, bias;  // bias empty when the layer has none
  void load(const SafeTensors& st, const std::string& prefix, int64_t out_f, int64_t in_f, bool has_bias);
  void load_raw(const std::vector<float>& weight, std::vector<float> b, int64_t out_f, int64_t in_f);
};

struct Norm {
  std::vector<float> weight, bias;
  void load(const SafeTensors& st, const std::string& prefix, int64_t dim);
};

struct TransformerWeights {
  TransformerConfig config;
  std::vector<float> table;  // [table_rows, dim] = token_emb; class_emb; fake_latent; mask_token
  std::vector<float> pos;    // [num_tokens + 1, dim]
  Norm embed_norm;
  struct Layer {
    Norm attn_norm, mlp_norm;
    Linear qkv, proj, fc1, fc2;
  };
  std::vector<Layer> layers;
  Norm final_norm;
  Linear head;  // no bias

  // pack = false reads the config only (the GPU decoder loads its own bf16 copy).
  static TransformerWeights load(const Bundle& bundle, bool pack = true);
};

struct StepPlan {
  // One entry per row: [num_rows]
  std::vector<int64_t> embed_ids, pos_ids, slot_mapping;
  std::vector<int32_t> row_seq, visible_len;
  std::vector<int32_t> row_pos;  // each row's position in its sequence (the GPU attention reads
                                 // this step's positions from the qkv rows, not the cache)
  // [num_seqs, max_blocks] block ids
  std::vector<int32_t> block_tables;
  int64_t max_blocks = 0;
  // Rows whose logits are wanted (the query rows), in output order.
  std::vector<int64_t> logit_rows;
  void clear();
  int64_t num_rows() const { return static_cast<int64_t>(embed_ids.size()); }
};

class StepDecoder {
 public:
  StepDecoder(const TransformerWeights& weights, KvCache& cache) : w_(weights), cache_(cache) {}
  // logits: [plan.logit_rows.size(), vocab_size]. Throws Error(kInternal) on a kernel failure.
  void run(const StepPlan& plan, float* logits);

 private:
  const TransformerWeights& w_;
  KvCache& cache_;
  std::vector<float> x_, h_, qkv_, attn_, mlp_, gathered_;
};

}  // namespace lpd
