// Shared helpers of the CUDA kernels: bf16 views of the header's raw words, launch checks, block
// reductions, and the mma / ldmatrix / cp.async wrappers of the tensor-core kernels. Internal to
// csrc/cuda.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <utility>

#include "lpd/kernels/common.h"

namespace lpd::kernels::cuda::detail {

using nv_bf16 = __nv_bfloat16;

__host__ __device__ inline const nv_bf16* as_nv(const bf16* p) { return reinterpret_cast<const nv_bf16*>(p); }
__host__ __device__ inline nv_bf16* as_nv(bf16* p) { return reinterpret_cast<nv_bf16*>(p); }
__host__ __device__ inline const nv_bf16* as_nv(const void* p) { return static_cast<const nv_bf16*>(p); }
__host__ __device__ inline nv_bf16* as_nv(void* p) { return static_cast<nv_bf16*>(p); }

// The two element types of DType: an element's float32 value, and an element from one.
__device__ __forceinline__ float to_f32(float v) { return v; }
__device__ __forceinline__ float to_f32(nv_bf16 v) { return __bfloat162float(v); }
template <typename T>
__device__ __forceinline__ T from_f32(float v);
template <>
__device__ __forceinline__ float from_f32<float>(float v) { return v; }
template <>
__device__ __forceinline__ nv_bf16 from_f32<nv_bf16>(float v) { return __float2bfloat16(v); }

inline Status launched() { return cudaGetLastError() == cudaSuccess ? Status::kOk : Status::kDeviceError; }

// Blocks of 256 threads for a grid-stride loop over `items`: one item per thread, at most `cap`
// blocks (each thread then takes several), at least one.
inline unsigned grid_stride_blocks(int64_t items, int64_t cap) {
  return static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>((items + 255) / 256, cap)));
}

// Programmatic dependent launch (sm_90): a kernel launched with launch_dependent() may be
// scheduled while the kernel before it in the stream is still running, so its launch overlaps
// the predecessor's tail instead of following its completion. Such a kernel calls pdl_enter()
// early: it lets the next dependent kernel be scheduled, then waits until every earlier kernel
// has finished and its writes are visible. Before it a kernel may only read memory that no
// kernel writes (the step plan, uploaded before the step's first kernel), and write nothing.
// In a CUDA graph capture the dependency becomes a programmatic edge.
__device__ __forceinline__ void pdl_enter() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}

// launch_dependent with the blocks of equal (x, y) and consecutive z grouped into thread-block
// clusters of cluster_z (1: no clusters).
template <typename... Params, typename... Args>
Status launch_dependent_clustered(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, unsigned cluster_z,
                                  cudaStream_t stream, Args&&... args) {
  cudaLaunchAttribute attrs[2]{};
  unsigned n = 0;
  if (stream) {  // the legacy default stream (the tests' launches) keeps plain order
    attrs[n].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attrs[n++].val.programmaticStreamSerializationAllowed = 1;
  }
  if (cluster_z > 1) {
    attrs[n].id = cudaLaunchAttributeClusterDimension;
    attrs[n++].val.clusterDim = {1, 1, cluster_z};
  }
  cudaLaunchConfig_t config{};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = smem;
  config.stream = stream;
  config.attrs = attrs;
  config.numAttrs = n;
  return cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...) == cudaSuccess ? Status::kOk
                                                                                        : Status::kDeviceError;
}

template <typename... Params, typename... Args>
Status launch_dependent(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                        Args&&... args) {
  return launch_dependent_clustered(kernel, grid, block, smem, 1, stream, std::forward<Args>(args)...);
}

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

// ---- tensor-core and async-copy building blocks (sm_80+; the kernels build for sm_90) --------

// c[0..3] += A (16x16 bf16, 4 registers) x B (16x8 bf16, 2 registers), float32 accumulators.
__device__ __forceinline__ void mma16816(float* c, const uint32_t* a, uint32_t b0, uint32_t b1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#else
  __trap();
#endif
}

// Four 8x8 bf16 matrices from shared memory (lane l gives the row address of matrix l / 8).
__device__ __forceinline__ void ldsm_x4(uint32_t* r, const void* p) {
  const uint32_t a = static_cast<uint32_t>(__cvta_generic_to_shared(p));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(a));
}

// The same, transposed.
__device__ __forceinline__ void ldsm_x4_trans(uint32_t* r, const void* p) {
  const uint32_t a = static_cast<uint32_t>(__cvta_generic_to_shared(p));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(a));
}

// 16 bytes global -> shared through L2 only (cp.async.cg), no registers; !valid writes zeros
// (src must still be a mapped address).
__device__ __forceinline__ void cp_async16(void* dst, const void* src, bool valid) {
  const uint32_t d = static_cast<uint32_t>(__cvta_generic_to_shared(dst));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(d), "l"(src), "r"(valid ? 16 : 0) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
// Waits until at most N committed groups are still in flight.
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

}  // namespace lpd::kernels::cuda::detail
