// The unified input embedding (ARCHITECTURE.md): row r of a step is
//   out[r] = LayerNorm(table[embed_ids[r]] + pos[pos_ids[r]])      (z_proj_ln, eps 1e-6)
// where table = [token_emb (V); class_emb; fake_latent; mask_token]. Context tokens, class
// rows, unconditional rows and position queries are all the same kind of row.
#pragma once

#include <cstdint>

#include "lpd/kernels/common.h"

namespace lpd::kernels {

struct EmbedParams {
  const float* table;  // [table_rows, dim]
  const float* pos;    // [pos_rows, dim]
  const float* gamma;  // [dim] LayerNorm weight
  const float* beta;   // [dim] LayerNorm bias
  float eps;
  const int64_t* embed_ids;  // [num_rows] in [0, table_rows)
  const int64_t* pos_ids;    // [num_rows] in [0, pos_rows)
  int64_t num_rows, dim, table_rows, pos_rows;
  float* out;  // [num_rows, dim]
};

Status embed_rows(const EmbedParams& p);

namespace cuda {
// Device twin of embed_rows: bf16 (or float32) table and pos, float32 LayerNorm, float32 rows
// out (the residual stream stays float32 on the GPU). embed_ids >= 0 index the table; a negative id
// -(1 + i) means the token tokens[i] (sampled on the device by an earlier step), so a step's
// plan never waits for the previous step's tokens on the host.
struct EmbedParams {
  const void* table;  // [table_rows, dim] of dtype
  const void* pos;    // [pos_rows, dim] of dtype
  const float* gamma;
  const float* beta;
  float eps;
  const int32_t* embed_ids;  // [num_rows]
  const int32_t* pos_ids;    // [num_rows]
  const int32_t* tokens;     // token arena read through negative ids
  int64_t num_rows, dim, table_rows, pos_rows;
  float* out;  // [num_rows, dim]
  DType dtype = DType::kBF16;
};
Status embed_rows(const EmbedParams& p, Stream stream);
}  // namespace cuda

}  // namespace lpd::kernels
