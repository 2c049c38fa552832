// Guidance + sampling on the GPU (lpd/kernels/sampling.h), one block per sampled token.
//
// The guided row is never stored: each pass recomputes u + w (c - u) / divisor from the two
// logits rows (L2-resident), with the CPU path's float32 operations in the same order and no
// FMA (__fmul_rn / __fadd_rn). top-k finds the k-th largest value by a 4-pass radix select on
// order-preserving keys (exact, ties kept like the CPU's >= kth). The uniforms come from
// Philox4x32-10 inside the kernel, counter (id / 4, gen_index, image, stream 0) as docs/rng.md
// defines, and the draw is the Gumbel-max argmax with float64 scores, first index on ties.
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
      for (int64_t i = tid; i < vocab; i += kThreads) {
        const uint32_t key = order_key(__fdiv_rn(guided(c, u, job.weight, i), job.divisor));
        if ((key & mask) == prefix) atomicAdd(&hist[(key >> shift) & 0xFFu], 1u);
      }
      __syncthreads();
      if (tid == 0) {
        int rem = remaining_sh;
        int digit = 255;
        for (; digit > 0; --digit) {
          if (static_cast<int>(hist[digit]) >= rem) break;
          rem -= static_cast<int>(hist[digit]);
        }
        prefix_sh = prefix | (static_cast<uint32_t>(digit) << shift);
        remaining_sh = rem;
      }
      __syncthreads();
    }
    const uint32_t key = prefix_sh;
    const uint32_t bits = (key & 0x80000000u) ? (key & 0x7FFFFFFFu) : ~key;
    kth = __uint_as_float(bits);
  }

  double best = -INFINITY;
  int idx = -1;
  const int64_t groups = (vocab + 3) / 4;
  for (int64_t g = tid; g < groups; g += kThreads) {
    const uint4 w = philox4x32(job.seed, static_cast<uint32_t>(g), static_cast<uint32_t>(job.gen_index),
                               static_cast<uint32_t>(job.image), 0u);
    const uint32_t words[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      const int64_t i = 4 * g + q;
      if (i >= vocab) break;
      const float s = __fdiv_rn(guided(c, u, job.weight, i), job.divisor);
      if (filter && !(s >= kth)) continue;
      const double score = static_cast<double>(s) - log(-log(to_uniform(words[q])));
      if (idx < 0 || score > best) {
        best = score;
        idx = static_cast<int>(i);
      }
    }
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
