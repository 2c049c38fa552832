// Position-query group attention over the paged bf16 KV cache (lpd/kernels/attention.h).
//
// One block per (tile, head): a tile is up to 16 consecutive rows of one sequence, so the
// sequence's K/V are read from the cache once per tile. The visible slots are walked in chunks
// (64 slots at head_dim 64): the chunk's K and V are staged in shared memory as float32, the
// tile's scores computed with each row's own visible length as the mask, and an online softmax
// (running max and sum per row, float32) rescales the float32 accumulators held in registers.
// Plain CUDA-core arithmetic: at LPD's sizes (<= 1025 slots, head_dim 64) attention is a small
// share of a step; tensor cores would be the next step for large batches.
#include <algorithm>
#include <cmath>

#include "common.cuh"
#include "lpd/kernels/attention.h"

namespace lpd::kernels::cuda {
namespace {

using namespace detail;

constexpr int kThreads = 128;
constexpr int kRows = static_cast<int>(kAttentionTileRows);
constexpr int kMaxAcc = kRows * static_cast<int>(kAttentionMaxHeadDim) / kThreads;  // 32

int chunk_for(int64_t head_dim) { return static_cast<int>(std::max<int64_t>(8, std::min<int64_t>(64, 4096 / head_dim))); }

size_t smem_bytes(int64_t head_dim, int chunk) {
  return sizeof(float) * (kRows * head_dim + chunk * (head_dim + 1) + chunk * head_dim + kRows * chunk + 3 * kRows);
}

__global__ void __launch_bounds__(kThreads) attention_kernel(PagedAttentionParams p, int chunk) {
  extern __shared__ float smem[];
  const int hd = static_cast<int>(p.head_dim);
  float* q = smem;                      // [kRows][hd]
  float* k = q + kRows * hd;            // [chunk][hd + 1]
  float* v = k + chunk * (hd + 1);      // [chunk][hd]
  float* s = v + chunk * hd;            // [kRows][chunk]
  float* row_max = s + kRows * chunk;   // [kRows]
  float* row_sum = row_max + kRows;     // [kRows]
  float* alpha = row_sum + kRows;       // [kRows]
  __shared__ int vis[kRows];
  __shared__ int max_vis;

  const int tid = threadIdx.x, head = blockIdx.y;
  const int first = p.tiles[2 * blockIdx.x], rows = p.tiles[2 * blockIdx.x + 1];
  const int seq = p.row_seq[first];
  const int32_t* table = p.block_tables + static_cast<int64_t>(seq) * p.max_blocks_per_seq;
  const int bs = static_cast<int>(p.block_size);
  const int64_t width = p.num_heads * p.head_dim;

  if (tid < kRows) {
    vis[tid] = tid < rows ? p.visible_len[first + tid] : 0;
    row_max[tid] = -INFINITY;
    row_sum[tid] = 0.0f;
  }
  for (int e = tid; e < kRows * hd; e += kThreads) {
    const int r = e / hd, d = e % hd;
    q[e] = r < rows ? __bfloat162float(as_nv(p.q)[(first + r) * p.q_stride + head * hd + d]) * p.scale : 0.0f;
  }
  __syncthreads();
  if (tid == 0) {
    int m = 0;
    for (int r = 0; r < rows; ++r) m = max(m, vis[r]);
    max_vis = m;
  }
  float acc[kMaxAcc];
#pragma unroll
  for (int i = 0; i < kMaxAcc; ++i) acc[i] = 0.0f;
  __syncthreads();

  const int warp = tid >> 5, lane = tid & 31;
  for (int j0 = 0; j0 < max_vis; j0 += chunk) {
    // Stage K and V of slots j0 .. j0 + chunk - 1 (zeros past the visible end).
    for (int e = tid; e < chunk * hd; e += kThreads) {
      const int j = e / hd, d = e % hd, slot = j0 + j;
      float kv = 0.0f, vv = 0.0f;
      if (slot < max_vis) {
        const int64_t phys = static_cast<int64_t>(table[slot / bs]) * bs + slot % bs;
        const int64_t off = phys * width + head * hd + d;
        kv = __bfloat162float(as_nv(p.k_cache)[off]);
        vv = __bfloat162float(as_nv(p.v_cache)[off]);
      }
      k[j * (hd + 1) + d] = kv;
      v[j * hd + d] = vv;
    }
    __syncthreads();
    for (int e = tid; e < kRows * chunk; e += kThreads) {
      const int r = e / chunk, j = e % chunk;
      float dot = -INFINITY;
      if (r < rows && j0 + j < vis[r]) {
        dot = 0.0f;
        const float* qr = q + r * hd;
        const float* kj = k + j * (hd + 1);
        for (int d = 0; d < hd; ++d) dot = fmaf(qr[d], kj[d], dot);
      }
      s[e] = dot;
    }
    __syncthreads();
    for (int r = warp; r < kRows; r += kThreads / 32) {
      float m = -INFINITY;
      for (int j = lane; j < chunk; j += 32) m = fmaxf(m, s[r * chunk + j]);
      for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
      const float old = row_max[r], next = fmaxf(old, m);
      float sum = 0.0f;
      for (int j = lane; j < chunk; j += 32) {
        const float x = s[r * chunk + j];
        const float e = x == -INFINITY ? 0.0f : __expf(x - next);
        s[r * chunk + j] = e;
        sum += e;
      }
      for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
      __syncwarp();
      if (lane == 0) {
        const float a = old == -INFINITY ? 0.0f : __expf(old - next);
        alpha[r] = a;
        row_sum[r] = row_sum[r] * a + sum;
        row_max[r] = next;
      }
    }
    __syncthreads();
#pragma unroll
    for (int i = 0; i < kMaxAcc; ++i) {
      const int e = tid + i * kThreads;
      if (e < kRows * hd) {
        const int r = e / hd, d = e % hd;
        float a = acc[i] * alpha[r];
        const float* pr = s + r * chunk;
        for (int j = 0; j < chunk; ++j) a = fmaf(pr[j], v[j * hd + d], a);
        acc[i] = a;
      }
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < kMaxAcc; ++i) {
    const int e = tid + i * kThreads;
    if (e < rows * hd) {
      const int r = e / hd, d = e % hd;
      const float l = row_sum[r];
      as_nv(p.out)[(first + r) * p.out_stride + head * hd + d] = __float2bfloat16(l > 0.0f ? acc[i] / l : 0.0f);
    }
  }
}

}  // namespace

int64_t plan_attention_tiles(const int32_t* row_seq, int64_t num_rows, int32_t* tiles) {
  int64_t n = 0;
  for (int64_t r = 0; r < num_rows;) {
    int64_t e = r + 1;
    while (e < num_rows && e - r < kAttentionTileRows && row_seq[e] == row_seq[r]) ++e;
    tiles[2 * n] = static_cast<int32_t>(r);
    tiles[2 * n + 1] = static_cast<int32_t>(e - r);
    ++n;
    r = e;
  }
  return n;
}

Status paged_attention(const PagedAttentionParams& p, Stream stream) {
  if (!p.q || !p.k_cache || !p.v_cache || !p.block_tables || !p.row_seq || !p.visible_len || !p.tiles || !p.out ||
      p.num_tiles < 0 || p.num_heads <= 0 || p.head_dim <= 0 || p.block_size <= 0 ||
      p.q_stride < p.num_heads * p.head_dim || p.out_stride < p.num_heads * p.head_dim)
    return Status::kInvalidArgument;
  if (p.head_dim > kAttentionMaxHeadDim || p.num_heads > 65535) return Status::kUnsupported;
  if (p.num_tiles == 0) return Status::kOk;
  const int chunk = chunk_for(p.head_dim);
  const size_t smem = smem_bytes(p.head_dim, chunk);
  static bool raised = false;  // the limit is a per-function attribute; raise it once
  if (!raised) {
    if (cudaFuncSetAttribute(attention_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 160 * 1024) !=
        cudaSuccess)
      return Status::kDeviceError;
    raised = true;
  }
  attention_kernel<<<dim3(static_cast<unsigned>(p.num_tiles), static_cast<unsigned>(p.num_heads)), kThreads, smem,
                     stream>>>(p, chunk);
  return launched();
}

}  // namespace lpd::kernels::cuda
