// The few-row GEMM behind lpd/kernels/gemm.h (m <= kGemmFewRowsMax: the batch-1 steps, where
// cuBLASLt spends ~8 us on a GEMM that moves its weights in ~2 us).
//
// Grid (splits, n / 64): block (s, j) owns output columns 64j .. 64j + 63 and the K range
// s * ks .. (s + 1) * ks, ks = k / splits. Its 64 x ks slice of w is copied into shared memory
// (cp.async) *before* the block waits for the previous kernel (programmatic dependent launch),
// so the weight read, the bulk of the bytes, overlaps whatever ran before. Then the block stages
// its 64 x ks slice of a, 64 rows at a time, and each of the 4 warps multiplies its 16 columns
// of w by those rows with mma.sync.m16n8k16 (w is the mma's M side, the activation rows its N
// side, so a pass over 8 rows costs one mma per warp and k16, bf16 in, float32 accumulation).
// Each block keeps its float32 partial tile [m][64] in shared memory. The splits of a column
// slice form one thread-block cluster: after a cluster barrier, block s sums its share of the
// tile's elements over the splits' shared memories (distributed shared memory) in split order
// 0, 1, ..., so the result is deterministic, adds the bias, applies GELU or the residual add,
// and writes c. Shared rows are XOR-swizzled in 16-byte chunks so ldmatrix is conflict-free.
#include <cooperative_groups.h>

#include <algorithm>
#include <mutex>

#include "common.cuh"
#include "gemm_rows.cuh"

namespace lpd::kernels::cuda {
namespace {

using namespace detail;
namespace cg = cooperative_groups;

constexpr int kThreads = 128;     // 4 warps x 16 output columns
constexpr int kCols = 64;         // output columns per block
constexpr int kPassRows = 64;     // activation rows staged per pass
constexpr int kPartStride = kCols + 4;  // floats per partial row: conflict-free fragment stores
constexpr int kMaxSplits = 8;     // portable cluster size
constexpr size_t kMaxSmem = 227 * 1024;

size_t smem_bytes(int64_t ks, int64_t m) {
  const int64_t rows16 = (m + 15) / 16 * 16;
  return static_cast<size_t>(2 * kCols * ks * 2 + rows16 * kPartStride * 4);
}

__device__ __forceinline__ int swz(int row, int chunk) { return (chunk ^ (row & 7)) * 8; }

__device__ __forceinline__ float gelu(float v) { return 0.5f * v * (1.0f + erff(v * 0.70710678118654752f)); }

struct RowsParams {
  const nv_bf16* a;
  int64_t lda;
  const nv_bf16* w;
  int64_t ldw;
  const void* bias;
  void* c;
  int64_t ldc;
  int m, ks;
  bool accumulate, gelu;
};

__device__ __forceinline__ void store4(float* c, float4 v) { *reinterpret_cast<float4*>(c) = v; }
__device__ __forceinline__ void store4(nv_bf16* c, float4 v) {
  const __nv_bfloat162 lo = __floats2bfloat162_rn(v.x, v.y), hi = __floats2bfloat162_rn(v.z, v.w);
  uint2 u;
  u.x = *reinterpret_cast<const uint32_t*>(&lo);
  u.y = *reinterpret_cast<const uint32_t*>(&hi);
  *reinterpret_cast<uint2*>(c) = u;
}
__device__ __forceinline__ float4 load4(const float* c) { return *reinterpret_cast<const float4*>(c); }
__device__ __forceinline__ float4 load4(const nv_bf16* c) {
  const uint2 u = *reinterpret_cast<const uint2*>(c);
  const float2 lo = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&u.x));
  const float2 hi = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&u.y));
  return make_float4(lo.x, lo.y, hi.x, hi.y);
}

template <typename OutT>
__global__ void __launch_bounds__(kThreads) gemm_rows_kernel(RowsParams p) {
  extern __shared__ __align__(16) unsigned char smem[];
  const int ks = p.ks, chunks = ks / 8;
  nv_bf16* ws = reinterpret_cast<nv_bf16*>(smem);  // [kCols][ks]
  nv_bf16* as = ws + kCols * ks;                   // [kPassRows][ks]
  float* part = reinterpret_cast<float*>(as + kPassRows * ks);  // [m rounded to 16][kPartStride]
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int split = blockIdx.x, n0 = blockIdx.y * kCols, k0 = split * ks;

  pdl_trigger();
  for (int i = tid; i < kCols * chunks; i += kThreads) {
    const int r = i / chunks, ch = i % chunks;
    cp_async16(ws + r * ks + swz(r, ch), p.w + static_cast<int64_t>(n0 + r) * p.ldw + k0 + ch * 8, true);
  }
  cp_async_commit();
  pdl_wait();

  for (int m0 = 0; m0 < p.m; m0 += kPassRows) {
    const int pairs = (min(kPassRows, p.m - m0) + 15) / 16;  // 16-row pairs of n8 tiles
    for (int i = tid; i < pairs * 16 * chunks; i += kThreads) {
      const int r = i / chunks, ch = i % chunks;
      const bool valid = m0 + r < p.m;
      cp_async16(as + r * ks + swz(r, ch), p.a + (valid ? static_cast<int64_t>(m0 + r) * p.lda + k0 + ch * 8 : 0),
                 valid);
    }
    cp_async_commit();
    cp_async_wait<0>();
    __syncthreads();

    float acc[2 * kPassRows / 16][4] = {};
    for (int kk = 0; kk < ks; kk += 16) {
      uint32_t wf[4];
      const int wr = warp * 16 + (lane & 15);
      ldsm_x4(wf, ws + wr * ks + swz(wr, kk / 8 + (lane >> 4)));
#pragma unroll
      for (int pr = 0; pr < kPassRows / 16; ++pr) {
        if (pr < pairs) {
          uint32_t af[4];
          const int ar = pr * 16 + ((lane >> 4) << 3) + (lane & 7);
          ldsm_x4(af, as + ar * ks + swz(ar, kk / 8 + ((lane >> 3) & 1)));
          mma16816(acc[2 * pr], wf, af[0], af[1]);
          mma16816(acc[2 * pr + 1], wf, af[2], af[3]);
        }
      }
    }
    // acc[t]: column (warp * 16 + lane / 4, + 8) of rows m0 + 8t + 2 (lane % 4), + 1
#pragma unroll
    for (int t = 0; t < 2 * kPassRows / 16; ++t) {
      if (t < 2 * pairs) {
        float* pp = part + (m0 + t * 8 + (lane & 3) * 2) * kPartStride + warp * 16 + (lane >> 2);
        pp[0] = acc[t][0];
        pp[kPartStride] = acc[t][1];
        pp[8] = acc[t][2];
        pp[kPartStride + 8] = acc[t][3];
      }
    }
    __syncthreads();  // the next pass restages as
  }

  cg::cluster_group cluster = cg::this_cluster();
  cluster.sync();
  const int splits = static_cast<int>(gridDim.x);
  const int items = p.m * (kCols / 4), share = (items + splits - 1) / splits;
  const int end = min(items, (split + 1) * share);
  for (int i = split * share + tid; i < end; i += kThreads) {
    const int row = i / (kCols / 4), col = (i % (kCols / 4)) * 4;
    float* local = part + row * kPartStride + col;
    float4 v = load4(cluster.map_shared_rank(local, 0));
    for (int s = 1; s < splits; ++s) {
      const float4 u = load4(cluster.map_shared_rank(local, s));
      v.x += u.x, v.y += u.y, v.z += u.z, v.w += u.w;
    }
    if (p.bias) {
      const float4 b = load4(static_cast<const OutT*>(p.bias) + n0 + col);
      v.x += b.x, v.y += b.y, v.z += b.z, v.w += b.w;
    }
    OutT* out = static_cast<OutT*>(p.c) + static_cast<int64_t>(row) * p.ldc + n0 + col;
    if (p.accumulate) {
      const float4 o = load4(out);
      v.x += o.x, v.y += o.y, v.z += o.z, v.w += o.w;
    }
    if (p.gelu) v = make_float4(gelu(v.x), gelu(v.y), gelu(v.z), gelu(v.w));
    store4(out, v);
  }
  cluster.sync();  // no block leaves while another still reads its shared memory
}

template <typename OutT>
Status launch(const RowsParams& p, int splits, int64_t n, size_t smem, cudaStream_t stream) {
  static std::once_flag once;
  static cudaError_t attr_status = cudaSuccess;
  std::call_once(once, [] {
    attr_status = cudaFuncSetAttribute(gemm_rows_kernel<OutT>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       static_cast<int>(kMaxSmem));
  });
  if (attr_status != cudaSuccess) return Status::kDeviceError;
  cudaLaunchAttribute attrs[2]{};
  attrs[0].id = cudaLaunchAttributeClusterDimension;
  attrs[0].val.clusterDim.x = static_cast<unsigned>(splits);
  attrs[0].val.clusterDim.y = 1;
  attrs[0].val.clusterDim.z = 1;
  attrs[1].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attrs[1].val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t config{};
  config.gridDim = dim3(static_cast<unsigned>(splits), static_cast<unsigned>(n / kCols));
  config.blockDim = dim3(kThreads);
  config.dynamicSmemBytes = smem;
  config.stream = stream;
  config.attrs = attrs;
  config.numAttrs = stream ? 2 : 1;  // the legacy default stream (the tests' launches) keeps plain order
  return cudaLaunchKernelEx(&config, gemm_rows_kernel<OutT>, p) == cudaSuccess ? Status::kOk : Status::kDeviceError;
}

}  // namespace

int gemm_rows_splits(int64_t m, int64_t n, int64_t k) {
  int device = 0, sms = 0;
  if (cudaGetDevice(&device) != cudaSuccess ||
      cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) != cudaSuccess)
    return 0;
  // The fewest splits that give every SM a block; failing that, the most that fit.
  int best = 0;
  for (int s = 1; s <= kMaxSplits; ++s) {
    if (k % (64 * s) != 0 || smem_bytes(k / s, m) > kMaxSmem) continue;
    best = s;
    if ((n / kCols) * s >= sms) break;
  }
  return best;
}

Status gemm_rows(const GemmArgs& g, int splits, Stream stream) {
  const int64_t ks = g.k / splits;
  const RowsParams p{as_nv(g.a), g.lda, as_nv(g.w), g.ldw, g.bias, g.c, g.ldc,
                     static_cast<int>(g.m), static_cast<int>(ks), g.accumulate, g.gelu};
  const size_t smem = smem_bytes(ks, g.m);
  return g.out_fp32 ? launch<float>(p, splits, g.n, smem, stream) : launch<nv_bf16>(p, splits, g.n, smem, stream);
}

}  // namespace lpd::kernels::cuda
