// CPU paged KV write (lpd/kernels/kv_cache.h): a row copy per K and V.
#include <cstring>

#include "lpd/kernels/kv_cache.h"

namespace lpd::kernels {

Status kv_cache_write(const float* k, const float* v, int64_t ld, const int64_t* slot_mapping, int64_t num_rows,
                      int64_t width, float* k_cache, float* v_cache) {
  if (!k || !v || !slot_mapping || !k_cache || !v_cache || width <= 0 || ld < width || num_rows < 0)
    return Status::kInvalidArgument;
  for (int64_t r = 0; r < num_rows; ++r) {
    const int64_t slot = slot_mapping[r];
    if (slot < 0) continue;
    std::memcpy(k_cache + slot * width, k + r * ld, sizeof(float) * width);
    std::memcpy(v_cache + slot * width, v + r * ld, sizeof(float) * width);
  }
  return Status::kOk;
}

}  // namespace lpd::kernels
