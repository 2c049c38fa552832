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
// Device position-query group attention, bf16 q/K/V/cache/out (or all float32: dtype kF32),
// float32 scores, softmax and accumulation (float64 for float32 tensors), online softmax over
// slot chunks; bf16 with head_dim 64 on tensor cores (P x V with P as bf16 hi + lo), otherwise
// on CUDA cores.
// Rows are processed in tiles of consecutive rows of one sequence (plan_attention_tiles) so
// that each K/V chunk is read once per tile, not per row. When tiles x heads cannot fill the
// GPU, the slots are split across the blocks of a thread-block cluster (up to 16), which merge
// their partials through distributed shared memory: one kernel, no workspace.
//
// The step's own K/V go into the cache here too (no separate write kernel): the rows of a
// sequence hold consecutive positions starting at the tile record's `cached` (positions below
// it are already in the cache), so positions at or above it are read from k_new / v_new (the
// qkv GEMM's output) and each row's K/V is written to its slot for the steps that follow.
// Nothing in the launch reads a slot it writes.
struct PagedAttentionParams {
  const void* q;  // [num_rows, num_heads * head_dim] of dtype (as are the tensors below), row stride q_stride
  int64_t q_stride;
  const void* k_new;  // [num_rows, num_heads * head_dim]: this step's rows' K and V, row stride kv_stride
  const void* v_new;
  int64_t kv_stride;
  const int32_t* slot_mapping;  // [num_rows] cache slot of each row's K/V (< 0: not kept)
  void* k_cache;  // [num_blocks, block_size, num_heads, head_dim]
  void* v_cache;
  const int32_t* block_tables;  // [num_seqs, max_blocks_per_seq]
  int64_t max_blocks_per_seq;
  const int32_t* visible_len;  // [num_rows] <= max_blocks_per_seq * block_size; a row sees its own
                               // position and none past its sequence's last one in the step
  const int32_t* tiles;        // [num_tiles, 8] from plan_attention_tiles
  int64_t num_tiles, tile_rows;  // tile_rows: the height plan_attention_tiles chose
  int64_t num_rows, num_heads, head_dim, block_size;
  float scale;
  void* out;  // [num_rows, num_heads * head_dim], row stride out_stride
  int64_t out_stride;
  DType dtype = DType::kBF16;
};
constexpr int64_t kAttentionMaxHeadDim = 256;
constexpr int kAttentionTileInts = 8;

struct AttentionTiles {
  int64_t count;      // tiles written
  int64_t tile_rows;  // their height: 32 or 64; 0 when the rows break the layout below
};
// Host helper: splits runs of equal row_seq into tiles of at most tile_rows rows. A tile is
// kAttentionTileInts ints: first row, row count, sequence, the largest visible_len of its
// rows, the sequence's first position in this step (`cached`), the row that holds it, 0, 0.
// row_pos[r] is row r's position in its sequence; a sequence's rows must hold consecutive
// positions in order (else tile_rows is 0, which paged_attention rejects). The height is
// 32 when no sequence has more than 32 rows (2-warp blocks, six resident per SM: a step has ~25
// rows per sequence), else 64 (4-warp blocks, so a 33-64-row sequence reads its K/V once).
// tiles needs room for kAttentionTileInts * num_rows ints.
AttentionTiles plan_attention_tiles(const int32_t* row_seq, const int32_t* row_pos, const int32_t* visible_len,
                                    int64_t num_rows, int32_t* tiles);
Status paged_attention(const PagedAttentionParams& p, Stream stream);
}  // namespace cuda

}  // namespace lpd::kernels
