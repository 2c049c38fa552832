// The paged KV cache, kernel side. Per layer, K and V each live in a pool laid out
// [num_blocks, block_size, num_heads, head_dim]; a physical slot is block * block_size + offset.
// The runtime (engine/src/block_pool.cpp) owns blocks and block tables and hands the kernels
// a per-row slot mapping, planned once per step and reused by every layer.
#pragma once

#include <cstdint>

#include "lpd/kernels/common.h"

namespace lpd::kernels {

// k_cache[slot_mapping[r]] = k[r], v_cache[slot_mapping[r]] = v[r] for r < num_rows; each
// entry is `width` = num_heads * head_dim floats; k and v have row stride ld (e.g. the qkv
// GEMM output, 3 * width). Rows with slot_mapping[r] < 0 are skipped.
Status kv_cache_write(const float* k, const float* v, int64_t ld, const int64_t* slot_mapping, int64_t num_rows,
                      int64_t width, float* k_cache, float* v_cache);

}  // namespace lpd::kernels
