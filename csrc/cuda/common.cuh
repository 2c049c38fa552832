// Shared helpers of the CUDA kernels: bf16 views of the header's raw words, launch checks and
// block reductions. Internal to csrc/cuda.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "lpd/kernels/common.h"

namespace lpd::kernels::cuda::detail {

using nv_bf16 = __nv_bfloat16;

__host__ __device__ inline const nv_bf16* as_nv(const bf16* p) { return reinterpret_cast<const nv_bf16*>(p); }
__host__ __device__ inline nv_bf16* as_nv(bf16* p) { return reinterpret_cast<nv_bf16*>(p); }

inline Status launched() { return cudaGetLastError() == cudaSuccess ? Status::kOk : Status::kDeviceError; }

// Sum over the block (blockDim.x a multiple of 32, <= 1024); every thread gets the result.
__device__ inline float block_sum(float v, float* scratch /* >= 33 floats */) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, warps = blockDim.x >> 5;
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  if (warp == 0) {
    float t = lane < warps ? scratch[lane] : 0.0f;
    for (int o = 16; o > 0; o >>= 1) t += __shfl_xor_sync(0xffffffffu, t, o);
    if (lane == 0) scratch[32] = t;
  }
  __syncthreads();
  return scratch[32];
}

}  // namespace lpd::kernels::cuda::detail
