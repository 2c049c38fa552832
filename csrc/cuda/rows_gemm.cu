// Few-row bf16 GEMM for the batch-1 transformer step (lpd/kernels/gemm.h, rows_gemm): with
// m <= 128 rows the cost is reading w once, so the kernel is built around streaming the weights.
//
// A block of 4 warps owns a column tile of 64 output columns (16 per warp) and one slice of k
// (grid = column tiles x ksplit). It copies the rows' A slice for its k range into shared memory
// once (16-byte cp.async; rows m .. 16 * MT - 1 are zero-filled there, never read from global
// memory), then streams its 64 weight rows through a 4-stage cp.async pipeline of 64 x 64 bf16
// chunks (cp.async.cg: L2 only, the weights are read once). Each 16-wide k step is one ldmatrix
// of the warp's 16 weight rows and, per m-tile, one ldmatrix of A and two
// mma.sync.m16n8k16 (bf16 in, float32 accumulation), the accumulators of all MT m-tiles held in
// registers. MT = ceil(m / 16) is a template parameter (1..8): register arrays need
// compile-time indices, and m-tiles wholly past m are never computed.
//
// Split-K: ksplit is picked on the host by a rough per-SM cycle model (plan below) so that the
// grid spreads the weight stream over the GPU without making the partial sums dominate. With
// ksplit == 1 the block applies the epilogue straight from its registers. Otherwise every block
// writes its float32 partial tile to workspace[split][m][n], fences, and counts itself in on
// counters[column tile]; the block that arrives last adds the ksplit partials in the fixed order
// s = 0 .. ksplit - 1 (the same bits every run), resets the counter to zero (so the call can be
// replayed in a CUDA graph) and applies the epilogue: + bias (one exact float32 add), then store
// bf16 / exact-erf GELU to bf16 / add into float32 c, and for the qkv GEMM the K and V columns
// also go to the KV cache. Results depend on (m, n, k) and the SM count through the split, not
// on the run.
#include <algorithm>

#include "common.cuh"
#include "lpd/kernels/gemm.h"

namespace lpd::kernels::cuda {
namespace {

using namespace detail;

constexpr int kThreads = 128;
constexpr int kTileN = 64;   // output columns per block, 16 per warp
constexpr int kChunkK = 64;  // k per pipeline stage
constexpr int kStages = 4;
constexpr int kWPad = 72;    // shared row stride of a weight chunk in bf16 (144 B: conflict-free ldmatrix)
constexpr int kMaxMTiles = static_cast<int>(kRowsGemmMaxRows) / 16;
constexpr int kMaxSplit = 16;
constexpr int kMaxBlockK = 640;  // caps the A slice in shared memory: 128 rows x 648 x 2 B = 162 KB
constexpr size_t kWBytes = sizeof(nv_bf16) * kStages * kTileN * kWPad;
static_assert(kRowsGemmMaxK == int64_t{kMaxSplit} * kMaxBlockK, "the largest k is ksplit x block k at most");

// Fragment coordinates: acc[t][nt][2 h + e] is row 16 t + r0 + 8 h, column col + 8 nt + e.
template <int MT>
__device__ void epilogue(const RowsGemmArgs& p, const float (&acc)[MT][2][4], int64_t col, int r0) {
#pragma unroll
  for (int t = 0; t < MT; ++t) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int64_t row = 16 * t + r0 + 8 * h;
      if (row >= p.m) continue;
      const int32_t slot = p.slots ? p.slots[row] : -1;
#pragma unroll
      for (int nt = 0; nt < 2; ++nt) {
        const int64_t j = col + 8 * nt;
        if (j >= p.n) continue;
        float y0 = acc[t][nt][2 * h], y1 = acc[t][nt][2 * h + 1];
        if (p.epilogue == RowsEpilogue::kAccumulateF32) {
          if (p.bias) {
            const float2 b = *reinterpret_cast<const float2*>(static_cast<const float*>(p.bias) + j);
            y0 += b.x;
            y1 += b.y;
          }
          float2* out = reinterpret_cast<float2*>(static_cast<float*>(p.c) + row * p.ldc + j);
          float2 v = *out;
          v.x += y0;
          v.y += y1;
          *out = v;
          continue;
        }
        if (p.bias) {
          const __nv_bfloat162 b = *reinterpret_cast<const __nv_bfloat162*>(static_cast<const nv_bf16*>(p.bias) + j);
          y0 += __low2float(b);
          y1 += __high2float(b);
        }
        if (p.epilogue == RowsEpilogue::kGeluBf16) {
          y0 = 0.5f * y0 * (1.0f + erff(y0 * 0.70710678118654752f));
          y1 = 0.5f * y1 * (1.0f + erff(y1 * 0.70710678118654752f));
        }
        const __nv_bfloat162 v = __floats2bfloat162_rn(y0, y1);
        *reinterpret_cast<__nv_bfloat162*>(static_cast<nv_bf16*>(p.c) + row * p.ldc + j) = v;
        if (slot >= 0 && j >= p.width) {
          nv_bf16* cache = j < 2 * p.width ? as_nv(p.k_cache) + slot * p.width + (j - p.width)
                                           : as_nv(p.v_cache) + slot * p.width + (j - 2 * p.width);
          *reinterpret_cast<__nv_bfloat162*>(cache) = v;
        }
      }
    }
  }
}

// Block (column tile blockIdx.x, k slice blockIdx.y): k range [blockIdx.y * block_k, + block_k)
// clipped to k. Dynamic shared memory: the weight stages, then the A slice.
template <int MT>
__global__ void __launch_bounds__(kThreads) rows_gemm_kernel(RowsGemmArgs p, int ksplit, int block_k) {
  extern __shared__ __align__(16) unsigned char smem[];
  nv_bf16* ws = reinterpret_cast<nv_bf16*>(smem);  // [kStages][kTileN][kWPad]
  nv_bf16* as = ws + kStages * kTileN * kWPad;     // [16 MT][block_k + 8]
  __shared__ bool last;
  const int a_stride = block_k + 8;  // 16 B past a multiple of 128 B: conflict-free ldmatrix
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int tile = blockIdx.x, split = blockIdx.y;
  const int64_t col0 = static_cast<int64_t>(tile) * kTileN;
  const int64_t k0 = static_cast<int64_t>(split) * block_k;
  const int kb = static_cast<int>(min(static_cast<int64_t>(block_k), p.k - k0));  // a multiple of 16
  const int num_chunks = (kb + kChunkK - 1) / kChunkK;

  // Weight chunk c -> stage st: 64 rows x 8 segments of 16 B, 4 per thread; zeros past n and kb.
  auto load_w = [&](int c, int st) {
#pragma unroll
    for (int i = 0; i < kTileN * 8 / kThreads; ++i) {
      const int seg = tid + i * kThreads, row = seg >> 3, part = seg & 7, kk = c * kChunkK + part * 8;
      const bool valid = col0 + row < p.n && kk < kb;
      const nv_bf16* src = valid ? as_nv(p.w) + (col0 + row) * p.ldw + k0 + kk : as_nv(p.w);
      cp_async16(ws + (st * kTileN + row) * kWPad + part * 8, src, valid);
    }
  };

  // The A slice joins the first weight chunk's group.
  const int row_segs = kb / 8;
  for (int seg = tid; seg < 16 * MT * row_segs; seg += kThreads) {
    const int row = seg / row_segs, part = seg % row_segs;
    nv_bf16* dst = as + row * a_stride + part * 8;
    if (row < p.m)
      cp_async16(dst, as_nv(p.a) + row * p.lda + k0 + part * 8, true);
    else
      *reinterpret_cast<uint4*>(dst) = make_uint4(0, 0, 0, 0);
  }
#pragma unroll
  for (int st = 0; st < kStages - 1; ++st) {
    if (st < num_chunks) load_w(st, st);
    cp_async_commit();
  }

  float acc[MT][2][4];
#pragma unroll
  for (int t = 0; t < MT; ++t)
#pragma unroll
    for (int nt = 0; nt < 2; ++nt) acc[t][nt][0] = acc[t][nt][1] = acc[t][nt][2] = acc[t][nt][3] = 0.0f;

  // ldmatrix row addresses of this lane: B = the warp's 16 weight rows (matrices: rows 0-7 /
  // 8-15 x k 0-7 / 8-15), A = rows 0-15 of an m-tile (matrices: rows 0-7 / 8-15 x k 0-7 / 8-15).
  const int b_off = (warp * 16 + ((lane >> 4) << 3) + (lane & 7)) * kWPad + ((lane >> 3) & 1) * 8;
  const int a_off = (lane & 15) * a_stride + (lane >> 4) * 8;
  for (int c = 0; c < num_chunks; ++c) {
    cp_async_wait<kStages - 2>();
    __syncthreads();  // chunk c has landed, and every warp is done with the stage refilled below
    if (c + kStages - 1 < num_chunks) load_w(c + kStages - 1, (c + kStages - 1) % kStages);
    cp_async_commit();
    const nv_bf16* wst = ws + (c % kStages) * kTileN * kWPad + b_off;
    const nv_bf16* ast = as + a_off + c * kChunkK;
    const int steps = min(kChunkK, kb - c * kChunkK) / 16;
#pragma unroll
    for (int kk = 0; kk < kChunkK / 16; ++kk) {
      if (kk >= steps) break;
      uint32_t b[4];
      ldsm_x4(b, wst + kk * 16);
#pragma unroll
      for (int t = 0; t < MT; ++t) {
        uint32_t a[4];
        ldsm_x4(a, ast + t * 16 * a_stride + kk * 16);
        mma16816(acc[t][0], a, b[0], b[1]);
        mma16816(acc[t][1], a, b[2], b[3]);
      }
    }
  }

  const int r0 = lane >> 2;
  const int64_t col = col0 + warp * 16 + 2 * (lane & 3);
  if (ksplit > 1) {
    const int64_t plane = p.m * p.n;  // one split's partial [m][n]
    float* part = p.workspace + split * plane;
#pragma unroll
    for (int t = 0; t < MT; ++t)
#pragma unroll
      for (int h = 0; h < 2; ++h)
#pragma unroll
        for (int nt = 0; nt < 2; ++nt) {
          const int64_t row = 16 * t + r0 + 8 * h, j = col + 8 * nt;
          if (row < p.m && j < p.n)
            __stcg(reinterpret_cast<float2*>(part + row * p.n + j),
                   make_float2(acc[t][nt][2 * h], acc[t][nt][2 * h + 1]));
        }
    __threadfence();
    __syncthreads();
    if (tid == 0) {
      last = atomicAdd(p.counters + tile, 1) == ksplit - 1;
      if (last) p.counters[tile] = 0;  // every block of the tile has counted: ready for the next call
    }
    __syncthreads();
    if (!last) return;
    __threadfence();
    // Fixed-order sum of the partials, 4 splits' loads in flight per m-tile.
    constexpr int kGroup = 4;
#pragma unroll
    for (int t = 0; t < MT; ++t)
#pragma unroll
      for (int nt = 0; nt < 2; ++nt) acc[t][nt][0] = acc[t][nt][1] = acc[t][nt][2] = acc[t][nt][3] = 0.0f;
    for (int s0 = 0; s0 < ksplit; s0 += kGroup) {
#pragma unroll
      for (int t = 0; t < MT; ++t) {
        float2 v[kGroup][2][2];
#pragma unroll
        for (int u = 0; u < kGroup; ++u)
#pragma unroll
          for (int h = 0; h < 2; ++h)
#pragma unroll
            for (int nt = 0; nt < 2; ++nt) {
              const int64_t row = 16 * t + r0 + 8 * h, j = col + 8 * nt;
              const float* src = p.workspace + (s0 + u) * plane + row * p.n + j;
              v[u][h][nt] = s0 + u < ksplit && row < p.m && j < p.n ? __ldcg(reinterpret_cast<const float2*>(src))
                                                                     : make_float2(0.0f, 0.0f);
            }
#pragma unroll
        for (int u = 0; u < kGroup; ++u) {
          if (s0 + u >= ksplit) break;
#pragma unroll
          for (int h = 0; h < 2; ++h)
#pragma unroll
            for (int nt = 0; nt < 2; ++nt) {
              acc[t][nt][2 * h] += v[u][h][nt].x;
              acc[t][nt][2 * h + 1] += v[u][h][nt].y;
            }
        }
      }
    }
  }
  epilogue<MT>(p, acc, col, r0);
}

using Kernel = void (*)(RowsGemmArgs, int, int);
constexpr Kernel kKernels[kMaxMTiles] = {rows_gemm_kernel<1>, rows_gemm_kernel<2>, rows_gemm_kernel<3>,
                                         rows_gemm_kernel<4>, rows_gemm_kernel<5>, rows_gemm_kernel<6>,
                                         rows_gemm_kernel<7>, rows_gemm_kernel<8>};

size_t smem_bytes(int64_t m_tiles, int64_t block_k) {
  return kWBytes + sizeof(nv_bf16) * static_cast<size_t>(16 * m_tiles * (block_k + 8));
}

int sm_count() {
  static int n = 0;
  if (n == 0) {
    int dev = 0;
    if (cudaGetDevice(&dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess || n <= 0)
      n = 132;
  }
  return n;
}

// Rough per-SM cycle model of one call (H200; only the ratios matter, retune on the GPU):
// a 64 x 64 weight chunk costs the larger of its load at one SM's share of the HBM bandwidth
// and its mma work (per m-tile), times the blocks an SM gets; a split adds the last block's
// fixed-order pass over the partials (its own row written, ksplit rows read back from L2) and
// the counter round trip.
constexpr int64_t kChunkLoadCycles = 256;  // 8 KB at ~32 B/clk
constexpr int64_t kChunkMmaCycles = 48;    // 64 x 64 x 16 FMAs at ~1400 FMA/clk
constexpr int64_t kPartialRowCycles = 4;   // 64 floats at ~64 B/clk from L2
constexpr int64_t kSplitCycles = 500;      // fence, atomic, L2 latency

struct Plan {
  int ksplit = 0;
  int block_k = 0;
};

Plan plan(int64_t m, int64_t n, int64_t k) {
  const int64_t tiles = (n + kTileN - 1) / kTileN, chunks = (k + kChunkK - 1) / kChunkK, m_tiles = (m + 15) / 16;
  const int64_t sms = sm_count();
  const int64_t chunk_cycles = std::max(kChunkLoadCycles, kChunkMmaCycles * m_tiles);
  Plan best;
  int64_t best_cost = 0;
  for (int64_t s = 1; s <= std::min<int64_t>(kMaxSplit, chunks); ++s) {
    const int64_t per = (chunks + s - 1) / s;  // chunks per block
    if (per * kChunkK > kMaxBlockK || (chunks + per - 1) / per != s) continue;  // too long, or the same as a smaller s
    const int64_t blocks_per_sm = (tiles * s + sms - 1) / sms;
    const int64_t reduce_cycles = s > 1 ? kSplitCycles + (s + 1) * m * kPartialRowCycles : 0;
    const int64_t cost = blocks_per_sm * per * chunk_cycles + reduce_cycles;
    if (best.ksplit == 0 || cost < best_cost) {
      best = {static_cast<int>(s), static_cast<int>(per * kChunkK)};
      best_cost = cost;
    }
  }
  return best;
}

bool aligned(const void* ptr, uintptr_t a) { return reinterpret_cast<uintptr_t>(ptr) % a == 0; }

}  // namespace

size_t rows_gemm_workspace_floats(int64_t n) { return static_cast<size_t>(kMaxSplit * kRowsGemmMaxRows * n); }

int64_t rows_gemm_counter_count(int64_t n) { return (n + kTileN - 1) / kTileN; }

Status rows_gemm(const RowsGemmArgs& g, Stream stream) {
  const bool f32 = g.epilogue == RowsEpilogue::kAccumulateF32;
  if (!g.a || !g.w || !g.c || g.m < 0 || g.n <= 0 || g.k <= 0 || g.lda < g.k || g.ldw < g.k || g.ldc < g.n ||
      (g.epilogue != RowsEpilogue::kStoreBf16 && g.epilogue != RowsEpilogue::kGeluBf16 && !f32) ||
      (g.slots && (!g.k_cache || !g.v_cache || g.width <= 0 || 3 * g.width != g.n || f32)))
    return Status::kInvalidArgument;
  const uintptr_t elem = f32 ? 4 : 2;
  if (g.m > kRowsGemmMaxRows || g.n % 8 != 0 || g.k % 16 != 0 || g.k > kRowsGemmMaxK || g.lda % 8 != 0 ||
      g.ldw % 8 != 0 || g.ldc % 2 != 0 || !aligned(g.a, 16) || !aligned(g.w, 16) || !aligned(g.c, 2 * elem) ||
      (g.bias && !aligned(g.bias, 2 * elem)) || (g.slots && (!aligned(g.k_cache, 4) || !aligned(g.v_cache, 4))))
    return Status::kUnsupported;
  if (g.m == 0) return Status::kOk;
  const Plan p = plan(g.m, g.n, g.k);
  if (p.ksplit > 1 && (!g.workspace || !g.counters)) return Status::kInvalidArgument;

  const int m_tiles = static_cast<int>((g.m + 15) / 16);
  const Kernel kernel = kKernels[m_tiles - 1];
  static bool raised[kMaxMTiles] = {};  // the limit is a per-function attribute; raise it once per instance
  if (!raised[m_tiles - 1]) {
    if (cudaFuncSetAttribute(reinterpret_cast<const void*>(kernel), cudaFuncAttributeMaxDynamicSharedMemorySize,
                             static_cast<int>(smem_bytes(m_tiles, kMaxBlockK))) != cudaSuccess)
      return Status::kDeviceError;
    raised[m_tiles - 1] = true;
  }
  const dim3 grid(static_cast<unsigned>(rows_gemm_counter_count(g.n)), static_cast<unsigned>(p.ksplit));
  kernel<<<grid, kThreads, smem_bytes(m_tiles, p.block_k), stream>>>(g, p.ksplit, p.block_k);
  return launched();
}

}  // namespace lpd::kernels::cuda
