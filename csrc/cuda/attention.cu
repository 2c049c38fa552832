// Position-query group attention over the paged bf16 KV cache (lpd/kernels/attention.h).
//
// head_dim 64 (the published models): tensor cores. One block per (tile, head, split) with one
// warp per 16 rows of the tile height (2 warps for 32-row tiles, 4 for 64; plan_attention_tiles
// picks the height); warp w owns rows 16w .. 16w + 15, exactly the M = 16 of an
// mma.sync.m16n8k16 (bf16 in, float32 accumulation). The block walks
// 64-position chunks of the tile's visible positions (chunk c goes to split c % splits): all
// threads stage a chunk's K and V in shared memory with cp.async, from the cache through the
// block table below the step's first position and from the qkv rows above it (zeros past the
// tile's longest visible length), double-buffered so the next chunk loads while this one is
// used, so each K/V byte is read once per (tile, head). The block that stages the tile's own
// positions copies them from shared memory to the rows' cache slots (the KV write, for the
// steps that follow). Each warp computes S = Q K^T with
// ldmatrix + mma, masks each row at its own visible length, runs the online softmax in float32
// (exp2 with the scale folded in), multiplies P V as two bf16 mma (P split into a bf16 high
// part and the bf16 rounding of the rest, so P keeps ~16 bits, not the 8 of a plain bf16 P) and
// keeps O in float32 registers. With one split each warp writes its normalised rows; with
// splits > 1 (few tiles: batch 1) the split blocks of a (tile, head) form a thread-block cluster,
// each leaves its partial (max, sum, unnormalised O) in shared memory, and after a cluster
// barrier each block merges a share of the rows from all of them through distributed shared
// memory, so the visible slots are spread over the whole GPU (flash-decoding) in one kernel.
// It is a programmatic dependent launch (common.cuh).
// Other head dims, and float32 tensors: the CUDA-core kernel below (16-row sub-tiles, chunks
// staged as float32, tile scores, online softmax; each block writes its rows' K/V to the cache
// first). Its scores, softmax and accumulators are float32 for bf16 tensors and float64 for
// float32 ones, so the float32 mode's attention is as close to float64 as its inputs allow.
#include <cooperative_groups.h>

#include <algorithm>
#include <cmath>
#include <set>
#include <type_traits>

#include "common.cuh"
#include "lpd/kernels/attention.h"

namespace lpd::kernels::cuda {
namespace {

using namespace detail;
namespace cg = cooperative_groups;

constexpr int kThreads = 128;
constexpr int kRows = 16;  // rows of the CUDA-core kernel's sub-tile, and of one warp's mma tile
constexpr int kMaxAcc = kRows * static_cast<int>(kAttentionMaxHeadDim) / kThreads;  // 32

int chunk_for(int64_t head_dim) { return static_cast<int>(std::max<int64_t>(8, std::min<int64_t>(64, 4096 / head_dim))); }

// The CUDA-core kernel's accumulator type: float for bf16 tensors, double for float32 ones.
template <typename T>
using Acc = std::conditional_t<std::is_same_v<T, float>, double, float>;

__device__ __forceinline__ float exp_acc(float x) { return expf(x); }
__device__ __forceinline__ double exp_acc(double x) { return exp(x); }

template <typename A>
size_t smem_bytes(int64_t head_dim, int chunk) {
  return sizeof(A) * (kRows * chunk + 3 * kRows) + sizeof(float) * (kRows * head_dim + chunk * (head_dim + 1) + chunk * head_dim);
}

// The CUDA-core kernel's accumulators: thread tid's acc[i] holds O[r][d] of the sub-tile, where
// r * hd + d = tid + i * kThreads; false when that element lies past the first `rows` rows.
__device__ __forceinline__ bool acc_element(int tid, int i, int rows, int hd, int& r, int& d) {
  const int e = tid + i * kThreads;
  if (e >= rows * hd) return false;
  r = e / hd;
  d = e % hd;
  return true;
}

template <typename T>
__global__ void __launch_bounds__(kThreads) attention_generic_kernel(PagedAttentionParams p, int chunk) {
  using A = Acc<T>;
  extern __shared__ __align__(8) unsigned char smem_raw[];
  const int hd = static_cast<int>(p.head_dim);
  A* s = reinterpret_cast<A*>(smem_raw);  // [kRows][chunk] scores, then probabilities
  A* row_max = s + kRows * chunk;         // [kRows]
  A* row_sum = row_max + kRows;           // [kRows]
  A* alpha = row_sum + kRows;             // [kRows]
  float* q = reinterpret_cast<float*>(alpha + kRows);  // [kRows][hd]
  float* k = q + kRows * hd;                           // [chunk][hd + 1]
  float* v = k + chunk * (hd + 1);                     // [chunk][hd]
  __shared__ int vis[kRows];
  __shared__ int max_vis;

  const int tid = threadIdx.x, head = blockIdx.y;
  const int4* record = reinterpret_cast<const int4*>(p.tiles) + 2 * blockIdx.x;
  const int4 tile = record[0];   // first row, rows, sequence, max visible
  const int4 fresh = record[1];  // cached, row of position `cached`
  const int first = tile.x + kRows * blockIdx.z;
  const int rows = min(kRows, tile.y - kRows * static_cast<int>(blockIdx.z));
  if (rows <= 0) return;
  const int32_t* table = p.block_tables + static_cast<int64_t>(tile.z) * p.max_blocks_per_seq;
  const int bs = static_cast<int>(p.block_size);
  const int64_t width = p.num_heads * p.head_dim;
  const T *pq = static_cast<const T*>(p.q), *k_new = static_cast<const T*>(p.k_new),
          *v_new = static_cast<const T*>(p.v_new);
  T *k_cache = static_cast<T*>(p.k_cache), *v_cache = static_cast<T*>(p.v_cache);

  if (tid < kRows) {
    vis[tid] = tid < rows ? p.visible_len[first + tid] : 0;
    row_max[tid] = -INFINITY;
    row_sum[tid] = 0;
  }
  for (int e = tid; e < kRows * hd; e += kThreads) {
    const int r = e / hd, d = e % hd;
    q[e] = r < rows ? to_f32(pq[(first + r) * p.q_stride + head * hd + d]) : 0.0f;
  }
  // This block's rows' K/V (this head) to their cache slots; nothing below reads them there.
  for (int e = tid; e < rows * hd; e += kThreads) {
    const int r = first + e / hd, d = e % hd, slot = p.slot_mapping[r];
    if (slot < 0) continue;
    const int64_t src = r * p.kv_stride + head * hd + d, dst = static_cast<int64_t>(slot) * width + head * hd + d;
    k_cache[dst] = k_new[src];
    v_cache[dst] = v_new[src];
  }
  __syncthreads();
  if (tid == 0) {
    int m = 0;
    for (int r = 0; r < rows; ++r) m = max(m, vis[r]);
    max_vis = m;
  }
  A acc[kMaxAcc];
#pragma unroll
  for (int i = 0; i < kMaxAcc; ++i) acc[i] = 0;
  __syncthreads();

  const int warp = tid >> 5, lane = tid & 31;
  for (int j0 = 0; j0 < max_vis; j0 += chunk) {
    // Stage K and V of positions j0 .. j0 + chunk - 1 (zeros past the visible end): from the
    // cache below `cached`, from this step's rows above.
    for (int e = tid; e < chunk * hd; e += kThreads) {
      const int j = e / hd, d = e % hd, pos = j0 + j;
      float kv = 0.0f, vv = 0.0f;
      if (pos < max_vis && pos < fresh.x) {
        const int64_t phys = static_cast<int64_t>(table[pos / bs]) * bs + pos % bs;
        const int64_t off = phys * width + head * hd + d;
        kv = to_f32(k_cache[off]);
        vv = to_f32(v_cache[off]);
      } else if (pos < max_vis) {
        const int64_t off = (fresh.y + pos - fresh.x) * p.kv_stride + head * hd + d;
        kv = to_f32(k_new[off]);
        vv = to_f32(v_new[off]);
      }
      k[j * (hd + 1) + d] = kv;
      v[j * hd + d] = vv;
    }
    __syncthreads();
    for (int e = tid; e < kRows * chunk; e += kThreads) {
      const int r = e / chunk, j = e % chunk;
      A dot = -INFINITY;
      if (r < rows && j0 + j < vis[r]) {
        dot = 0;
        const float* qr = q + r * hd;
        const float* kj = k + j * (hd + 1);
        for (int d = 0; d < hd; ++d) dot = fma(A(qr[d]), A(kj[d]), dot);
        dot *= A(p.scale);
      }
      s[e] = dot;
    }
    __syncthreads();
    for (int r = warp; r < kRows; r += kThreads / 32) {
      A m = -INFINITY;
      for (int j = lane; j < chunk; j += 32) m = max(m, s[r * chunk + j]);
      for (int o = 16; o > 0; o >>= 1) m = max(m, __shfl_xor_sync(0xffffffffu, m, o));
      const A old = row_max[r], next = max(old, m);
      A sum = 0;
      for (int j = lane; j < chunk; j += 32) {
        const A x = s[r * chunk + j];
        const A e = x == -INFINITY ? A(0) : exp_acc(x - next);
        s[r * chunk + j] = e;
        sum += e;
      }
      for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
      __syncwarp();
      if (lane == 0) {
        const A a = old == -INFINITY ? A(0) : exp_acc(old - next);
        alpha[r] = a;
        row_sum[r] = row_sum[r] * a + sum;
        row_max[r] = next;
      }
    }
    __syncthreads();
#pragma unroll
    for (int i = 0; i < kMaxAcc; ++i) {
      int r, d;
      if (acc_element(tid, i, kRows, hd, r, d)) {
        A a = acc[i] * alpha[r];
        const A* pr = s + r * chunk;
        for (int j = 0; j < chunk; ++j) a = fma(pr[j], A(v[j * hd + d]), a);
        acc[i] = a;
      }
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < kMaxAcc; ++i) {
    int r, d;
    if (acc_element(tid, i, rows, hd, r, d)) {
      const A l = row_sum[r];
      static_cast<T*>(p.out)[(first + r) * p.out_stride + head * hd + d] =
          from_f32<T>(static_cast<float>(l > 0 ? acc[i] / l : A(0)));
    }
  }
}


// ---- head_dim 64 on tensor cores ------------------------------------------------------------
constexpr int kHd = 64;
constexpr int kChunk = 64;  // slots per block iteration
constexpr int kNt = kChunk / 8, kKc = kChunk / 16;  // S n-tiles and P k-tiles of a chunk
constexpr int kPad = 72;    // shared row stride in bf16 (144 B: the 8 rows of an ldmatrix hit distinct banks)
constexpr int kStageElems = 2 * kChunk * kPad;  // K and V of one chunk, bf16
constexpr int kMaxSplits = 16;  // blocks of one cluster (a non-portable size above 8)
static_assert(64 * (kHd + 2) * sizeof(float) <= 2 * kStageElems * sizeof(nv_bf16),
              "a split's partial fits in the staging buffers");

// Rounds a pair to bf16 (lo in the low half, the lower column of an mma fragment); lo and hi
// receive the rounded values.
__device__ __forceinline__ uint32_t pack_bf16(float& lo, float& hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  lo = __low2float(v);
  hi = __high2float(v);
  return *reinterpret_cast<const uint32_t*>(&v);
}

template <int kWarps>
__global__ void __launch_bounds__(kWarps * 32) attention_mma64_kernel(PagedAttentionParams p, int splits) {
  constexpr int kTileRows = kWarps * kRows;
  constexpr int kCopies = kChunk * 8 / (kWarps * 32);  // 16-byte K (and V) copies per thread per chunk
  __shared__ __align__(16) nv_bf16 smem[2 * kStageElems];  // two stages of K and V

  // The plan (tile records, slot mapping, block tables, visible lengths) was uploaded before the
  // step's first kernel and no kernel writes it, so it is read before the programmatic-launch
  // wait, while the kernel before still runs; q, the qkv rows and the K/V cache after it.
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int tile = blockIdx.x, head = blockIdx.y, split = blockIdx.z;
  const int4 rec = reinterpret_cast<const int4*>(p.tiles)[2 * tile];        // first row, rows, sequence, max visible
  const int4 fresh = reinterpret_cast<const int4*>(p.tiles)[2 * tile + 1];  // cached, row of position `cached`
  const int first = rec.x, tile_rows = rec.y, max_vis = rec.w, cached = fresh.x, fresh_row = fresh.y;
  const int tile_pos = cached + first - fresh_row;  // the position of the tile's first row
  __shared__ int tile_slots[kWarps * kRows];         // the cache slot of each of the tile's rows
  for (int r = threadIdx.x; r < tile_rows; r += kWarps * 32) tile_slots[r] = p.slot_mapping[first + r];
  const int32_t* table = p.block_tables + static_cast<int64_t>(rec.z) * p.max_blocks_per_seq;
  const int bs = static_cast<int>(p.block_size);
  const int64_t width = p.num_heads * kHd;
  const float scale_log2 = p.scale * 1.4426950408889634f;

  // This thread's two fragment rows (of its warp's 16) and their visible lengths.
  const int wrow = warp * kRows, rows = min(kRows, tile_rows - wrow);  // rows <= 0: the warp only loads
  const int r0 = lane >> 2, r1 = r0 + 8, cq = 2 * (lane & 3);
  const int vis0 = r0 < rows ? p.visible_len[first + wrow + r0] : 0;
  const int vis1 = r1 < rows ? p.visible_len[first + wrow + r1] : 0;

  // Chunk c's K/V element offsets for this thread's copies: >= 0 into the cache through the
  // block table (positions below `cached`), -2 - offset into k_new / v_new (this step's rows),
  // -1 past the tile's visible end; then the copies into a stage buffer: K rows then V rows,
  // 8 x 16 bytes per position each.
  auto offsets = [&](int c, int64_t* off) {
#pragma unroll
    for (int t = 0; t < kCopies; ++t) {
      const int i = threadIdx.x + kWarps * 32 * t, pos = c * kChunk + (i >> 3);
      const int64_t col = head * kHd + (i & 7) * 8;
      off[t] = pos >= max_vis ? -1
               : pos < cached ? (static_cast<int64_t>(table[pos / bs]) * bs + pos % bs) * width + col
                              : -2 - (static_cast<int64_t>(fresh_row + pos - cached) * p.kv_stride + col);
    }
  };
  auto stage = [&](const int64_t* off, int buf) {
    nv_bf16* ks = smem + buf * kStageElems;
    nv_bf16* vs = ks + kChunk * kPad;
#pragma unroll
    for (int t = 0; t < kCopies; ++t) {
      const int i = threadIdx.x + kWarps * 32 * t, j = i >> 3, part16 = i & 7;
      const bool new_row = off[t] <= -2;
      const int64_t o = new_row ? -2 - off[t] : off[t] < 0 ? 0 : off[t];
      cp_async16(ks + j * kPad + part16 * 8, (new_row ? as_nv(p.k_new) : as_nv(p.k_cache)) + o, off[t] != -1);
      cp_async16(vs + j * kPad + part16 * 8, (new_row ? as_nv(p.v_new) : as_nv(p.v_cache)) + o, off[t] != -1);
    }
    cp_async_commit();
  };
  const int num_chunks = (max_vis + kChunk - 1) / kChunk;
  int64_t off[kCopies];
  if (split < num_chunks) offsets(split, off);
  pdl_enter();

  // Q as 4 A fragments (k = 16 dims each), bf16 straight from global memory.
  uint32_t qa[4][4];
  {
    const nv_bf16* q0 = as_nv(p.q) + static_cast<int64_t>(first + wrow + r0) * p.q_stride + head * kHd;
    const nv_bf16* q1 = as_nv(p.q) + static_cast<int64_t>(first + wrow + r1) * p.q_stride + head * kHd;
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) {
      const int d = 16 * kk + cq;
      qa[kk][0] = r0 < rows ? *reinterpret_cast<const uint32_t*>(q0 + d) : 0u;
      qa[kk][1] = r1 < rows ? *reinterpret_cast<const uint32_t*>(q1 + d) : 0u;
      qa[kk][2] = r0 < rows ? *reinterpret_cast<const uint32_t*>(q0 + d + 8) : 0u;
      qa[kk][3] = r1 < rows ? *reinterpret_cast<const uint32_t*>(q1 + d + 8) : 0u;
    }
  }

  float o[8][4];
#pragma unroll
  for (int i = 0; i < 8; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.0f;
  float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.0f, l1 = 0.0f;  // row max (log2 units), partial row sums

  int buf = 0;
  if (split < num_chunks) stage(off, 0);
  for (int c = split; c < num_chunks; c += splits, buf ^= 1) {
    if (c + splits < num_chunks) {
      offsets(c + splits, off);
      stage(off, buf ^ 1);
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();  // this chunk is in shared memory for every warp
    const nv_bf16* ks = smem + buf * kStageElems;
    const nv_bf16* vs = ks + kChunk * kPad;
    const int j0 = c * kChunk;
    // The tile's own positions in this chunk (each chunk is staged by one split): their K/V
    // (this head) from shared memory to the rows' cache slots. Nothing in this launch reads them.
    for (int i = threadIdx.x + 8 * (max(j0, tile_pos) - j0); i < 8 * (min(j0 + kChunk, tile_pos + tile_rows) - j0);
         i += kWarps * 32) {
      const int slot = tile_slots[(i >> 3) + j0 - tile_pos];
      if (slot < 0) continue;
      const int64_t dst = static_cast<int64_t>(slot) * width + head * kHd + (i & 7) * 8;
      const int at = (i >> 3) * kPad + (i & 7) * 8;
      *reinterpret_cast<uint4*>(as_nv(p.k_cache) + dst) = *reinterpret_cast<const uint4*>(ks + at);
      *reinterpret_cast<uint4*>(as_nv(p.v_cache) + dst) = *reinterpret_cast<const uint4*>(vs + at);
    }
    if (rows > 0) {
      float s[kNt][4];
#pragma unroll
      for (int nt = 0; nt < kNt; ++nt) {
        s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.0f;
#pragma unroll
        for (int kp = 0; kp < 2; ++kp) {
          uint32_t b[4];
          ldsm_x4(b, ks + (nt * 8 + (lane & 7)) * kPad + kp * 32 + (lane >> 3) * 8);
          mma16816(s[nt], qa[2 * kp], b[0], b[1]);
          mma16816(s[nt], qa[2 * kp + 1], b[2], b[3]);
        }
      }
      float mx0 = -INFINITY, mx1 = -INFINITY;
#pragma unroll
      for (int nt = 0; nt < kNt; ++nt) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int j = j0 + nt * 8 + cq + (e & 1);
          const bool valid = j < (e < 2 ? vis0 : vis1);
          s[nt][e] = valid ? s[nt][e] * scale_log2 : -INFINITY;
        }
        mx0 = fmaxf(mx0, fmaxf(s[nt][0], s[nt][1]));
        mx1 = fmaxf(mx1, fmaxf(s[nt][2], s[nt][3]));
      }
#pragma unroll
      for (int x = 1; x <= 2; x <<= 1) {
        mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, x));
        mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, x));
      }
      const float n0 = fmaxf(m0, mx0), n1 = fmaxf(m1, mx1);
      const float u0 = n0 == -INFINITY ? 0.0f : n0, u1 = n1 == -INFINITY ? 0.0f : n1;
      const float a0 = exp2f(m0 - u0), a1 = exp2f(m1 - u1);  // 0 while the row had no slot yet
      m0 = n0;
      m1 = n1;
      // P = hi + lo, both bf16: P x V as two mma keeps P to ~16 significant bits (float32-like),
      // so the only bf16 roundings are those of q, K and V themselves.
      uint32_t pa[kKc][4], pl[kKc][4];
      float sum0 = 0.0f, sum1 = 0.0f;
#pragma unroll
      for (int nt = 0; nt < kNt; ++nt) {
        const float p0 = exp2f(s[nt][0] - u0), p1 = exp2f(s[nt][1] - u0);
        const float p2 = exp2f(s[nt][2] - u1), p3 = exp2f(s[nt][3] - u1);
        float h0 = p0, h1 = p1, h2 = p2, h3 = p3;
        pa[nt >> 1][(nt & 1) * 2] = pack_bf16(h0, h1);
        pa[nt >> 1][(nt & 1) * 2 + 1] = pack_bf16(h2, h3);
        float e0 = p0 - h0, e1 = p1 - h1, e2 = p2 - h2, e3 = p3 - h3;
        pl[nt >> 1][(nt & 1) * 2] = pack_bf16(e0, e1);
        pl[nt >> 1][(nt & 1) * 2 + 1] = pack_bf16(e2, e3);
        sum0 += p0 + p1;
        sum1 += p2 + p3;
      }
      l0 = l0 * a0 + sum0;
      l1 = l1 * a1 + sum1;
#pragma unroll
      for (int dt = 0; dt < 8; ++dt) {
        o[dt][0] *= a0;
        o[dt][1] *= a0;
        o[dt][2] *= a1;
        o[dt][3] *= a1;
      }
#pragma unroll
      for (int kc = 0; kc < kKc; ++kc) {
#pragma unroll
        for (int dp = 0; dp < 4; ++dp) {
          uint32_t b[4];
          ldsm_x4_trans(b, vs + (16 * kc + ((lane >> 3) & 1) * 8 + (lane & 7)) * kPad + 16 * dp + (lane >> 4) * 8);
          mma16816(o[2 * dp], pa[kc], b[0], b[1]);
          mma16816(o[2 * dp + 1], pa[kc], b[2], b[3]);
          mma16816(o[2 * dp], pl[kc], b[0], b[1]);
          mma16816(o[2 * dp + 1], pl[kc], b[2], b[3]);
        }
      }
    }
    __syncthreads();  // every warp is done with this buffer before it is refilled
  }
#pragma unroll
  for (int x = 1; x <= 2; x <<= 1) {
    l0 += __shfl_xor_sync(0xffffffffu, l0, x);
    l1 += __shfl_xor_sync(0xffffffffu, l1, x);
  }
  if (splits == 1) {
    if (rows <= 0) return;
    const float i0 = l0 > 0.0f ? 1.0f / l0 : 0.0f, i1 = l1 > 0.0f ? 1.0f / l1 : 0.0f;
#pragma unroll
    for (int dt = 0; dt < 8; ++dt) {
      const int d = head * kHd + dt * 8 + cq;
      if (r0 < rows)
        *reinterpret_cast<__nv_bfloat162*>(as_nv(p.out) + (first + wrow + r0) * p.out_stride + d) =
            __floats2bfloat162_rn(o[dt][0] * i0, o[dt][1] * i0);
      if (r1 < rows)
        *reinterpret_cast<__nv_bfloat162*>(as_nv(p.out) + (first + wrow + r1) * p.out_stride + d) =
            __floats2bfloat162_rn(o[dt][2] * i1, o[dt][3] * i1);
    }
    return;
  }
  // Split: the blocks of this (tile, head) are one thread-block cluster. Each leaves its
  // partial (unnormalised O, row max, row sum; rows it did not see have max -inf and sum 0) in
  // its own shared memory, then block `split` merges rows split, split + splits, ... from every
  // block's partial through distributed shared memory, in split order (the same bits every run).
  float* part = reinterpret_cast<float*>(smem);  // [kTileRows][kHd] O, [kTileRows] max, [kTileRows] sum
#pragma unroll
  for (int dt = 0; dt < 8; ++dt) {
    *reinterpret_cast<float2*>(part + (wrow + r0) * kHd + dt * 8 + cq) = make_float2(o[dt][0], o[dt][1]);
    *reinterpret_cast<float2*>(part + (wrow + r1) * kHd + dt * 8 + cq) = make_float2(o[dt][2], o[dt][3]);
  }
  if ((lane & 3) == 0) {
    part[kTileRows * kHd + wrow + r0] = m0;
    part[kTileRows * kHd + wrow + r1] = m1;
    part[kTileRows * kHd + kTileRows + wrow + r0] = l0;
    part[kTileRows * kHd + kTileRows + wrow + r1] = l1;
  }
  cg::cluster_group cluster = cg::this_cluster();
  cluster.sync();  // every partial is written and visible to the cluster
  for (int r = split + splits * warp; r < tile_rows; r += splits * kWarps) {
    const float* u[kMaxSplits];
    float m[kMaxSplits], l[kMaxSplits];
    float2 v[kMaxSplits];
    float mx = -INFINITY;
#pragma unroll
    for (int s = 0; s < kMaxSplits; ++s) {  // every load issued before any is used
      if (s < splits) {
        u[s] = cluster.map_shared_rank(part, s);
        m[s] = u[s][kTileRows * kHd + r];
        l[s] = u[s][kTileRows * kHd + kTileRows + r];
        v[s] = *reinterpret_cast<const float2*>(u[s] + r * kHd + 2 * lane);
        mx = fmaxf(mx, m[s]);
      }
    }
    float2 acc = make_float2(0.0f, 0.0f);
    float sum = 0.0f;
    if (mx != -INFINITY) {
#pragma unroll
      for (int s = 0; s < kMaxSplits; ++s) {
        if (s < splits) {
          const float f = exp2f(m[s] - mx);
          acc.x += f * v[s].x;
          acc.y += f * v[s].y;
          sum += f * l[s];
        }
      }
    }
    const float inv = sum > 0.0f ? 1.0f / sum : 0.0f;
    *reinterpret_cast<__nv_bfloat162*>(as_nv(p.out) + (first + r) * p.out_stride + head * kHd + 2 * lane) =
        __floats2bfloat162_rn(acc.x * inv, acc.y * inv);
  }
  cluster.sync();  // no block leaves (freeing its shared memory) while another still reads it
}

int sm_count() {
  static int n = 0;
  if (n == 0) {
    int dev = 0;
    if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess ||
        n <= 0)
      n = 132;
  }
  return n;
}

bool aligned(const void* ptr, uintptr_t a) { return reinterpret_cast<uintptr_t>(ptr) % a == 0; }

template <typename T>
Status launch_generic(const PagedAttentionParams& p, cudaStream_t stream) {
  const int chunk = chunk_for(p.head_dim);
  const size_t smem = smem_bytes<Acc<T>>(p.head_dim, chunk);
  static const bool raised =  // the limit is a per-function attribute; raise it once
      cudaFuncSetAttribute(attention_generic_kernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize, 160 * 1024) ==
      cudaSuccess;
  if (!raised) return Status::kDeviceError;
  const unsigned sub_tiles = static_cast<unsigned>(p.tile_rows / kRows);
  attention_generic_kernel<T><<<dim3(static_cast<unsigned>(p.num_tiles), static_cast<unsigned>(p.num_heads), sub_tiles),
                                kThreads, smem, stream>>>(p, chunk);
  return launched();
}

// A programmatic dependent launch (common.cuh); with splits > 1 the z blocks of each
// (tile, head) form one cluster.
template <int kWarps>
Status launch_mma64(const PagedAttentionParams& p, int splits, cudaStream_t stream) {
  static const bool allowed =  // cluster sizes above 8 are a per-function opt-in
      cudaFuncSetAttribute(attention_mma64_kernel<kWarps>, cudaFuncAttributeNonPortableClusterSizeAllowed, 1) ==
      cudaSuccess;
  if (!allowed) return Status::kDeviceError;
  const dim3 grid(static_cast<unsigned>(p.num_tiles), static_cast<unsigned>(p.num_heads), static_cast<unsigned>(splits));
  return launch_dependent_clustered(attention_mma64_kernel<kWarps>, grid, kWarps * 32, 0,
                                    static_cast<unsigned>(splits), stream, p, splits);
}

}  // namespace

AttentionTiles plan_attention_tiles(const int32_t* row_seq, const int32_t* row_pos, const int32_t* visible_len,
                                    int64_t num_rows, int32_t* tiles) {
  int64_t longest = 0;  // the most rows of one sequence (a run of equal row_seq)
  std::set<int32_t> seen;  // sequences of the runs so far: each sequence is one run
  for (int64_t r = 0, run = 0; r < num_rows; ++r) {
    const bool same = r > 0 && row_seq[r] == row_seq[r - 1];
    if (same ? row_pos[r] != row_pos[r - 1] + 1 : !seen.insert(row_seq[r]).second) return {0, 0};
    run = same ? run + 1 : 1;
    longest = std::max(longest, run);
  }
  const int64_t height = longest <= 32 ? 32 : 64;
  int64_t n = 0;
  for (int64_t r = 0, seq_first = 0; r < num_rows; ++n) {
    if (r == 0 || row_seq[r] != row_seq[r - 1]) seq_first = r;
    int64_t e = r + 1;
    int32_t max_vis = visible_len[r];
    while (e < num_rows && e - r < height && row_seq[e] == row_seq[r]) max_vis = std::max(max_vis, visible_len[e++]);
    int32_t* t = tiles + kAttentionTileInts * n;
    t[0] = static_cast<int32_t>(r);
    t[1] = static_cast<int32_t>(e - r);
    t[2] = row_seq[r];
    t[3] = max_vis;
    t[4] = row_pos[seq_first];
    t[5] = static_cast<int32_t>(seq_first);
    t[6] = t[7] = 0;
    r = e;
  }
  return {n, height};
}

Status paged_attention(const PagedAttentionParams& p, Stream stream) {
  if (!p.q || !p.k_new || !p.v_new || !p.slot_mapping || !p.k_cache || !p.v_cache || !p.block_tables ||
      !p.visible_len || !p.tiles || !p.out || p.kv_stride < p.num_heads * p.head_dim ||
      p.num_tiles < 0 || (p.tile_rows != 32 && p.tile_rows != 64) || p.num_heads <= 0 || p.head_dim <= 0 ||
      p.block_size <= 0 || p.q_stride < p.num_heads * p.head_dim || p.out_stride < p.num_heads * p.head_dim ||
      !aligned(p.tiles, 16))
    return Status::kInvalidArgument;
  if (p.head_dim > kAttentionMaxHeadDim || p.num_heads > 65535) return Status::kUnsupported;
  if (p.num_tiles == 0) return Status::kOk;
  if (p.dtype == DType::kBF16 && p.head_dim == kHd && p.q_stride % 2 == 0 && p.out_stride % 2 == 0 && aligned(p.q, 4) && aligned(p.out, 4) &&
      aligned(p.k_cache, 16) && aligned(p.v_cache, 16) && p.kv_stride % 8 == 0 && aligned(p.k_new, 16) &&
      aligned(p.v_new, 16)) {
    // Split the slots across the blocks of a cluster when the tiles x heads blocks cannot fill the GPU.
    int64_t splits = 1;
    const int64_t blocks = p.num_tiles * p.num_heads, target = 2 * static_cast<int64_t>(sm_count());
    if (blocks < target) {
      const int64_t max_chunks = (p.max_blocks_per_seq * p.block_size + kChunk - 1) / kChunk;
      splits = std::max<int64_t>(1, std::min({(target + blocks - 1) / blocks, max_chunks, int64_t{kMaxSplits}}));
    }
    return p.tile_rows == 32 ? launch_mma64<2>(p, static_cast<int>(splits), stream)
                             : launch_mma64<4>(p, static_cast<int>(splits), stream);
  }
  return p.dtype == DType::kF32 ? launch_generic<float>(p, stream) : launch_generic<nv_bf16>(p, stream);
}

}  // namespace lpd::kernels::cuda
