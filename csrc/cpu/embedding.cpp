// CPU unified embedding: gather + pos_embed + z_proj_ln (lpd/kernels/embedding.h).
#include "lpd/kernels/embedding.h"

#include "lpd/kernels/norm.h"

namespace lpd::kernels {

Status embed_rows(const EmbedParams& p) {
  if (!p.table || !p.pos || !p.gamma || !p.beta || !p.embed_ids || !p.pos_ids || !p.out || p.dim <= 0 ||
      p.num_rows < 0)
    return Status::kInvalidArgument;
  for (int64_t r = 0; r < p.num_rows; ++r)
    if (p.embed_ids[r] < 0 || p.embed_ids[r] >= p.table_rows || p.pos_ids[r] < 0 || p.pos_ids[r] >= p.pos_rows)
      return Status::kInvalidArgument;
  for (int64_t r = 0; r < p.num_rows; ++r) {
    const float* e = p.table + p.embed_ids[r] * p.dim;
    const float* q = p.pos + p.pos_ids[r] * p.dim;
    float* o = p.out + r * p.dim;
    for (int64_t i = 0; i < p.dim; ++i) o[i] = e[i] + q[i];
  }
  return layer_norm(p.out, p.dim, p.gamma, p.beta, p.eps, p.out, p.dim, p.num_rows, p.dim);
}

}  // namespace lpd::kernels
