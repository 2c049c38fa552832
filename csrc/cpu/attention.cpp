// CPU position-query group attention over the paged cache (lpd/kernels/attention.h).
//
// Per (row, head): scores over the visible slots, float32 softmax (max-subtracted, sequential
// sum), then the weighted sum of V normalised at the end. Rows are independent, so (row, head)
// pairs are spread over threads with no effect on the result.
#include <cmath>
#include <vector>

#include "lpd/kernels/attention.h"

namespace lpd::kernels {

Status paged_attention(const PagedAttentionParams& p) {
  if (!p.q || !p.k_cache || !p.v_cache || !p.block_tables || !p.row_seq || !p.visible_len || !p.out ||
      p.num_heads <= 0 || p.head_dim <= 0 || p.block_size <= 0 || p.num_rows < 0)
    return Status::kInvalidArgument;
  const int64_t max_len = p.max_blocks_per_seq * p.block_size;
  for (int64_t r = 0; r < p.num_rows; ++r)
    if (p.visible_len[r] < 1 || p.visible_len[r] > max_len || p.row_seq[r] < 0) return Status::kInvalidArgument;
  const int64_t width = p.num_heads * p.head_dim;
  const int64_t hd = p.head_dim;
  const int64_t tasks = p.num_rows * p.num_heads;
#pragma omp parallel if (tasks * max_len * hd > 65536)
  {
    std::vector<float> scores(static_cast<size_t>(max_len));
    std::vector<float> acc(static_cast<size_t>(hd));
#pragma omp for schedule(static)
    for (int64_t t = 0; t < tasks; ++t) {
      const int64_t r = t / p.num_heads, h = t % p.num_heads;
      const float* q = p.q + r * p.q_stride + h * hd;
      const int32_t* table = p.block_tables + static_cast<int64_t>(p.row_seq[r]) * p.max_blocks_per_seq;
      const int64_t len = p.visible_len[r];
      float mx = -INFINITY;
      for (int64_t s = 0; s < len; ++s) {
        const int64_t phys = static_cast<int64_t>(table[s / p.block_size]) * p.block_size + s % p.block_size;
        const float* k = p.k_cache + phys * width + h * hd;
        float dot = 0.0f;
        for (int64_t i = 0; i < hd; ++i) dot += q[i] * k[i];
        scores[s] = dot * p.scale;
        if (scores[s] > mx) mx = scores[s];
      }
      float denom = 0.0f;
      for (int64_t i = 0; i < hd; ++i) acc[i] = 0.0f;
      for (int64_t s = 0; s < len; ++s) {
        const float e = std::exp(scores[s] - mx);
        denom += e;
        const int64_t phys = static_cast<int64_t>(table[s / p.block_size]) * p.block_size + s % p.block_size;
        const float* v = p.v_cache + phys * width + h * hd;
        for (int64_t i = 0; i < hd; ++i) acc[i] += e * v[i];
      }
      float* o = p.out + r * p.out_stride + h * hd;
      const float inv = 1.0f / denom;
      for (int64_t i = 0; i < hd; ++i) o[i] = acc[i] * inv;
    }
  }
  return Status::kOk;
}

}  // namespace lpd::kernels
