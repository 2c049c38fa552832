// Guidance + sampling on the GPU (lpd/kernels/sampling.h), one block per sampled token.
//
// The guided row is never stored: each pass recomputes u + w (c - u) / divisor from the two
// logits rows (L2-resident), with the CPU path's float32 operations in the same order and no
// FMA (__fmul_rn / __fadd_rn). top-k finds the k-th largest value by a 4-pass radix select on
// order-preserving keys (exact, ties kept like the CPU's >= kth; warp-aggregated histogram
// counts, a parallel suffix scan to pick each digit). The uniforms come from Philox4x32-10
// inside the kernel, counter (id / 4, gen_index, image, stream 0) as docs/rng.md defines, and
// the draw is the Gumbel-max argmax with float64 scores, first index on ties. The float64
// scores are only computed where they can matter: every score is first computed in float32
// with a proven error bound, and only the entries whose upper bound reaches the largest lower
// bound are scored in float64 (usually one per block), which gives the same token.
#include <cstdint>

#include "common.cuh"
#include "lpd/kernels/sampling.h"

namespace lpd::kernels::cuda {
namespace {

constexpr int kThreads = 512;

__device__ inline uint4 philox4x32(uint64_t seed, uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3) {
  uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
#pragma unroll
  for (int round = 0; round < 10; ++round) {
    if (round) {
      k0 += 0x9E3779B9u;
      k1 += 0xBB67AE85u;
    }
    const uint32_t hi0 = __umulhi(0xD2511F53u, c0), lo0 = 0xD2511F53u * c0;
    const uint32_t hi1 = __umulhi(0xCD9E8D57u, c2), lo1 = 0xCD9E8D57u * c2;
    const uint32_t n0 = hi1 ^ c1 ^ k0, n1 = lo1, n2 = hi0 ^ c3 ^ k1, n3 = lo0;
    c0 = n0; c1 = n1; c2 = n2; c3 = n3;
  }
  return make_uint4(c0, c1, c2, c3);
}

__device__ inline double to_uniform(uint32_t x) { return (static_cast<double>(x >> 8) + 0.5) * (1.0 / 16777216.0); }

__device__ inline float guided(const float* c, const float* u, float w, int64_t i) {
  if (!u) return c[i];
  return __fadd_rn(u[i], __fmul_rn(w, __fsub_rn(c[i], u[i])));
}

__device__ inline uint32_t order_key(float f) {
  const uint32_t b = __float_as_uint(f);
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

// Warp argmax of (score, index) by xor shuffles: larger score wins, then the smaller index;
// idx < 0 marks an empty slot.
template <typename T>
__device__ inline void warp_argmax(T& best, int& idx) {
  for (int o = 16; o > 0; o >>= 1) {
    const T ov = __shfl_xor_sync(0xffffffffu, best, o);
    const int oi = __shfl_xor_sync(0xffffffffu, idx, o);
    if (oi >= 0 && (idx < 0 || ov > best || (ov == best && oi < idx))) {
      best = ov;
      idx = oi;
    }
  }
}

// Block argmax of (score, index): larger score wins, then the smaller index.
template <typename T>
__device__ void block_argmax(T& best, int& idx, T* sv, int* si) {
  warp_argmax(best, idx);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  if (lane == 0) {
    sv[warp] = best;
    si[warp] = idx;
  }
  __syncthreads();
  if (warp == 0) {
    best = lane < kThreads / 32 ? sv[lane] : sv[0];
    idx = lane < kThreads / 32 ? si[lane] : -1;
    warp_argmax(best, idx);
  }
}

// The four uniform words of vocabulary entries 4g .. 4g + 3 (docs/rng.md).
__device__ inline uint4 uniform_words(const SampleJob& job, int64_t g) {
  return philox4x32(job.seed, static_cast<uint32_t>(g), static_cast<uint32_t>(job.gen_index),
                    static_cast<uint32_t>(job.image), 0u);
}

__device__ inline uint32_t word(const uint4& w, int q) { return q == 0 ? w.x : q == 1 ? w.y : q == 2 ? w.z : w.w; }

// float64 Gumbel-max score of scaled value s with uniform word x (docs/rng.md): the CPU's value.
__device__ inline double exact_score(float s, uint32_t x) {
  return static_cast<double>(s) - log(-log(to_uniform(x)));
}

// log(-log(u)) in float32 for u = (x >> 8 + 0.5) / 2^24 = (2k + 1) / 2^25, within 2.5e-6 of the
// float64 value: u is exact in float32 below 1/2 and so is 1 - u above it, and logf / log1pf
// are within 1 ulp, so -log(u) is within ~2.4e-7 relative and its log within that plus half
// an ulp of a value below 17.4 in magnitude (9.5e-7).
__device__ inline float gumbel_log_term(uint32_t x) {
  const uint32_t k = x >> 8;
  const float neg_log_u = k < (1u << 23) ? -logf((2.0f * static_cast<float>(k) + 1.0f) * 0x1p-25f)
                                         : -log1pf(-static_cast<float>((1u << 25) - 2u * k - 1u) * 0x1p-25f);
  return logf(neg_log_u);
}

// |float32 score - float64 score| for |s| <= max_abs: 2.5e-6 from gumbel_log_term plus half an
// ulp of s - g (at most (max_abs + 17.4) * 2^-24); the bound below is 4x that.
// (Clamped so that infinite logits keep a finite bound.)
__device__ inline float score_error_bound(float max_abs) {
  return 1e-5f + fminf(max_abs, 1e30f) * 0x1p-22f + 17.4f * 0x1p-22f;
}

// The digit of this radix pass: the largest d whose count of keys with digit >= d (under the
// current prefix) reaches `remaining` (0 if none), and the count above d taken off
// `remaining`. A suffix scan over the 256 bins by the first 8 warps; one thread writes.
__device__ void select_digit(const unsigned* hist, int shift, uint32_t& prefix, int& remaining) {
  __shared__ unsigned warp_total[8], suffix[257];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int rem = remaining;  // read before the barriers: one thread rewrites it below
  if (tid < 256) {
    unsigned v = hist[255 - tid];  // scan from the top digit down
    for (int o = 1; o < 32; o <<= 1) {
      const unsigned t = __shfl_up_sync(0xffffffffu, v, o);
      if (lane >= o) v += t;
    }
    if (lane == 31) warp_total[warp] = v;
    suffix[255 - tid] = v;  // within the warp so far
  }
  if (tid == 0) suffix[256] = 0;
  __syncthreads();
  if (tid < 256) {
    unsigned add = 0;
    for (int w = 0; w < warp; ++w) add += warp_total[w];
    suffix[255 - tid] += add;  // count of keys with digit >= 255 - tid
  }
  __syncthreads();
  if (tid < 256) {
    const int d = tid;
    const bool reaches = d == 0 || static_cast<int>(suffix[d]) >= rem;
    if (reaches && (d == 255 || static_cast<int>(suffix[d + 1]) < rem)) {
      prefix |= static_cast<uint32_t>(d) << shift;
      remaining = rem - static_cast<int>(suffix[d + 1]);
    }
  }
}

__global__ void __launch_bounds__(kThreads) sample_kernel(const float* __restrict__ logits, int64_t vocab,
                                                          const SampleJob* __restrict__ jobs,
                                                          int32_t* __restrict__ tokens) {
  __shared__ double sv[32];
  __shared__ float sf[32];
  __shared__ int si[32];
  __shared__ unsigned hist[256];
  __shared__ uint32_t prefix_sh;
  __shared__ int remaining_sh;
  const SampleJob job = jobs[blockIdx.x];
  const float* c = logits + static_cast<int64_t>(job.cond_row) * vocab;
  const float* u = job.uncond_row >= 0 ? logits + static_cast<int64_t>(job.uncond_row) * vocab : nullptr;
  const int tid = threadIdx.x;
  // entry i's guided logit over the temperature, the CPU's float32 operations
  auto scaled = [&](int64_t i) { return __fdiv_rn(guided(c, u, job.weight, i), job.divisor); };

  if (job.greedy) {
    float best = -INFINITY;
    int idx = -1;
    for (int64_t i = tid; i < vocab; i += kThreads) {
      const float x = guided(c, u, job.weight, i);
      if (idx < 0 || x > best) {
        best = x;
        idx = static_cast<int>(i);
      }
    }
    block_argmax(best, idx, sf, si);
    if (tid == 0) tokens[job.out_index] = idx < 0 ? 0 : idx;
    return;
  }

  // top-k threshold: key of the k-th largest scaled value (radix select, 8 bits a pass).
  bool filter = job.top_k > 0 && job.top_k < vocab;
  float kth = -INFINITY;
  if (filter) {
    if (tid == 0) {
      prefix_sh = 0;
      remaining_sh = job.top_k;
    }
    for (int pass = 0; pass < 4; ++pass) {
      const int shift = 24 - 8 * pass;
      for (int b = tid; b < 256; b += kThreads) hist[b] = 0;
      __syncthreads();
      const uint32_t prefix = prefix_sh;
      const uint32_t mask = pass == 0 ? 0u : (0xFFFFFFFFu << (shift + 8));
      for (int64_t first = 0; first < vocab; first += kThreads) {  // uniform trip count: whole warps below
        const int64_t i = first + tid;
        int bin = -1;
        if (i < vocab) {
          const uint32_t key = order_key(scaled(i));
          if ((key & mask) == prefix) bin = static_cast<int>((key >> shift) & 0xFFu);
        }
        const unsigned peers = __match_any_sync(0xffffffffu, bin);
        if (bin >= 0 && __ffs(peers) - 1 == (tid & 31)) atomicAdd(&hist[bin], static_cast<unsigned>(__popc(peers)));
      }
      __syncthreads();
      select_digit(hist, shift, prefix_sh, remaining_sh);
      __syncthreads();
    }
    const uint32_t key = prefix_sh;
    const uint32_t bits = (key & 0x80000000u) ? (key & 0x7FFFFFFFu) : ~key;
    kth = __uint_as_float(bits);
  }

  // Gumbel-max. Pass 1, float32: each thread's two best scores and the largest |s| it saw
  // (its error bound). The float64 maximum lies at an entry whose float32 upper bound reaches
  // the largest float32 lower bound of any thread's best.
  // f(i, s, word) for each entry of this thread that the top-k filter keeps: its index, scaled
  // logit and Philox word (four entries share one Philox draw).
  const int64_t groups = (vocab + 3) / 4;
  auto for_each_kept = [&](auto&& f) {
    for (int64_t g = tid; g < groups; g += kThreads) {
      const uint4 w = uniform_words(job, g);
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        const int64_t i = 4 * g + q;
        if (i >= vocab) break;
        const float s = scaled(i);
        if (filter && !(s >= kth)) continue;
        f(i, s, word(w, q));
      }
    }
  };
  float best1 = -INFINITY, best2 = -INFINITY, max_abs = 0.0f;
  int idx1 = -1;
  for_each_kept([&](int64_t i, float s, uint32_t r) {
    const float score = s - gumbel_log_term(r);
    max_abs = fmaxf(max_abs, fabsf(s));
    if (idx1 < 0 || score > best1) {
      best2 = best1;
      best1 = score;
      idx1 = static_cast<int>(i);
    } else if (score > best2) {
      best2 = score;
    }
  });
  const float bound = score_error_bound(max_abs);
  float lower = idx1 < 0 ? -INFINITY : best1 - bound;
  for (int o = 16; o > 0; o >>= 1) lower = fmaxf(lower, __shfl_xor_sync(0xffffffffu, lower, o));
  if ((tid & 31) == 0) sf[tid >> 5] = lower;
  __syncthreads();
  lower = sf[0];
  for (int wi = 1; wi < kThreads / 32; ++wi) lower = fmaxf(lower, sf[wi]);

  // Pass 2, float64, only where it can matter: the thread's best, or (rarely) all its entries
  // whose upper bound reaches `lower` when its second best does too.
  double best = -INFINITY;
  int idx = -1;
  if (idx1 >= 0 && best2 + bound >= lower) {
    for_each_kept([&](int64_t i, float s, uint32_t r) {
      if (s - gumbel_log_term(r) + bound < lower) return;
      const double score = exact_score(s, r);
      if (idx < 0 || score > best) {
        best = score;
        idx = static_cast<int>(i);
      }
    });
  } else if (idx1 >= 0 && best1 + bound >= lower) {
    best = exact_score(scaled(idx1), word(uniform_words(job, idx1 / 4), idx1 % 4));
    idx = idx1;
  }
  block_argmax(best, idx, sv, si);
  if (tid == 0) tokens[job.out_index] = idx < 0 ? 0 : idx;
}

}  // namespace

Status sample_tokens(const float* logits, int64_t vocab, const SampleJob* jobs, int64_t num_jobs, int32_t* tokens,
                     Stream stream) {
  if (!logits || !jobs || !tokens || vocab <= 0 || num_jobs < 0) return Status::kInvalidArgument;
  if (vocab > (int64_t{1} << 30)) return Status::kUnsupported;
  if (num_jobs == 0) return Status::kOk;
  sample_kernel<<<static_cast<unsigned>(num_jobs), kThreads, 0, stream>>>(logits, vocab, jobs, tokens);
  return detail::launched();
}

}  // namespace lpd::kernels::cuda
