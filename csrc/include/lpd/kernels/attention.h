// Position-query group attention over the paged KV cache (ARCHITECTURE.md).
//
// Row r belongs to sequence row_seq[r] and attends to that sequence's slots
// [0, visible_len[r]) through its block table: context rows see the context so far, query
// rows also see every query of their step (mutual visibility). One per-row limit expresses
// the whole block-causal rule, so there is no mask tensor. Scores are scaled by `scale`
// (head_dim^-0.5) and the softmax runs in float32 (max-subtracted, sequential sums).
#pragma once

#include <cstdint>

#include "lpd/kernels/common.h"

namespace lpd::kernels {

struct PagedAttentionParams {
  const float* q;  // [num_rows, num_heads, head_dim] with row stride q_stride
  int64_t q_stride;
  const float* k_cache;  // [num_blocks, block_size, num_heads, head_dim]
  const float* v_cache;
  const int32_t* block_tables;  // [num_seqs, max_blocks_per_seq] physical block ids
  int64_t max_blocks_per_seq;
  const int32_t* row_seq;      // [num_rows] sequence of each row
  const int32_t* visible_len;  // [num_rows] >= 1, <= max_blocks_per_seq * block_size
  int64_t num_rows, num_heads, head_dim, block_size;
  float scale;
  float* out;  // [num_rows, num_heads * head_dim] with row stride out_stride
  int64_t out_stride;
};

Status paged_attention(const PagedAttentionParams& p);

namespace cuda {
// Device position-query group attention, bf16 q/K/V, float32 scores, softmax and accumulation
// (online softmax over slot chunks; head_dim 64 on tensor cores, P x V with P as bf16 hi + lo).
// Rows are processed in tiles of consecutive rows of one sequence (plan_attention_tiles) so
// that each K/V chunk is read once per tile, not per row. When tiles x heads cannot fill the
// GPU, the slots are split across the blocks of a thread-block cluster (up to 16), which merge
// their partials through distributed shared memory: one kernel, no workspace.
struct PagedAttentionParams {
  const bf16* q;  // [num_rows, num_heads * head_dim], row stride q_stride
  int64_t q_stride;
  const bf16* k_cache;  // [num_blocks, block_size, num_heads, head_dim]
  const bf16* v_cache;
  const int32_t* block_tables;  // [num_seqs, max_blocks_per_seq]
  int64_t max_blocks_per_seq;
  const int32_t* visible_len;  // [num_rows]
  const int32_t* tiles;        // [num_tiles, 4] from plan_attention_tiles
  int64_t num_tiles, tile_rows;  // tile_rows: the height plan_attention_tiles chose
  int64_t num_rows, num_heads, head_dim, block_size;
  float scale;
  bf16* out;  // [num_rows, num_heads * head_dim], row stride out_stride
  int64_t out_stride;
};
constexpr int64_t kAttentionMaxHeadDim = 256;

struct AttentionTiles {
  int64_t count;      // tiles written
  int64_t tile_rows;  // their height: 32 or 64
};
// Host helper: splits runs of equal row_seq into tiles of at most tile_rows rows. A tile is 4
// ints: first row, row count, sequence, and the largest visible_len of its rows. The height is
// 32 when no sequence has more than 32 rows (2-warp blocks, six resident per SM: a step has ~25
// rows per sequence), else 64 (4-warp blocks, so a 33-64-row sequence reads its K/V once).
// tiles needs room for 4 * num_rows ints.
AttentionTiles plan_attention_tiles(const int32_t* row_seq, const int32_t* visible_len, int64_t num_rows,
                                    int32_t* tiles);
Status paged_attention(const PagedAttentionParams& p, Stream stream);
}  // namespace cuda

}  // namespace lpd::kernels
