// Paged KV write on the GPU (lpd/kernels/kv_cache.h): a grid-stride loop over (row, vector)
// copies each row's K and V (width bf16 each) to the row's slot, 16 bytes per thread access when
// the layout allows, so the many small rows of a large batch keep every SM busy. Launched as a
// programmatic dependent of the qkv GEMM (common.cuh).
#include "common.cuh"
#include "lpd/kernels/kv_cache.h"

namespace lpd::kernels::cuda {
namespace {

template <typename Vec>
__global__ void kv_write_kernel(const Vec* __restrict__ k, const Vec* __restrict__ v, int64_t ld,
                                const int32_t* __restrict__ slots, int64_t rows, int64_t width, Vec* __restrict__ kc,
                                Vec* __restrict__ vc) {
  detail::pdl_enter();
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < rows * width;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = e / width, i = e % width, slot = slots[r];
    if (slot < 0) continue;
    kc[slot * width + i] = k[r * ld + i];
    vc[slot * width + i] = v[r * ld + i];
  }
}



}  // namespace

Status kv_cache_write(const bf16* k, const bf16* v, int64_t ld, const int32_t* slot_mapping, int64_t num_rows,
                      int64_t width, bf16* k_cache, bf16* v_cache, Stream stream) {
  if (!k || !v || !slot_mapping || !k_cache || !v_cache || num_rows < 0 || width <= 0 || ld < width)
    return Status::kInvalidArgument;
  if (num_rows == 0) return Status::kOk;
  const auto aligned = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  if (width % 8 == 0 && ld % 8 == 0 && aligned(k) && aligned(v) && aligned(k_cache) && aligned(v_cache)) {
    return detail::launch_dependent(kv_write_kernel<uint4>, detail::grid_stride_blocks(num_rows * width / 8, 132 * 16),
                                    256, 0, stream, reinterpret_cast<const uint4*>(k),
                                    reinterpret_cast<const uint4*>(v), ld / 8, slot_mapping, num_rows, width / 8,
                                    reinterpret_cast<uint4*>(k_cache), reinterpret_cast<uint4*>(v_cache));
  }
  return detail::launch_dependent(kv_write_kernel<uint16_t>, detail::grid_stride_blocks(num_rows * width, 132 * 16), 256,
                                  0, stream, k, v, ld, slot_mapping, num_rows, width, k_cache, v_cache);
}

}  // namespace lpd::kernels::cuda
