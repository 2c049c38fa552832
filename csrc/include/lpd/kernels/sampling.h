// Guidance and sampling, the arithmetic of python/lpd_engine/sampling.py reproduced bit for bit
// (docs/rng.md): float32 guidance without FMA, greedy argmax, float32 temperature scaling,
// top-k (ties kept), top-p over the kept values sorted descending with float64 prefix sums,
// and a Gumbel-max draw with float64 scores. The uniforms come in from the caller (the runtime
// draws them from the shared Philox stream), so this header knows nothing of seeds or requests.
#pragma once

#include <cstddef>
#include <cstdint>

#include "lpd/kernels/common.h"

namespace lpd::kernels {

// out[r, v] = uncond[r, v] + weights[r] * (cond[r, v] - uncond[r, v]) in float32, no FMA.
// cond / uncond / out rows have stride ld; out may alias cond.
Status guidance_combine(const float* cond, const float* uncond, const float* weights, float* out, int64_t ld,
                        int64_t num_rows, int64_t vocab);

struct SampleParams {
  double temperature;  // >= 0
  int64_t top_k;      // 0 = off
  double top_p;       // (0, 1], 1 = off
};

// Floats/ints of scratch sample_row needs for a vocabulary of `vocab` entries.
size_t sample_workspace_bytes(int64_t vocab);

// One token from guided logits[vocab]. Greedy (temperature 0 or top_k 1): first argmax, and
// `uniforms` may be null. Otherwise uniforms[vocab] in (0, 1) drive the Gumbel-max draw.
// workspace: sample_workspace_bytes(vocab) bytes, 8-byte aligned.
Status sample_row(const float* logits, int64_t vocab, const SampleParams& params, const double* uniforms,
                  void* workspace, int64_t* token);

namespace cuda {
// Guidance and sampling on the device, one thread block per sampled token, the RNG (Philox4x32-10,
// docs/rng.md) drawn inside the kernel: no host synchronisation and no uniform buffers.
// Same arithmetic as the CPU path: float32 guidance without FMA, float32 temperature division,
// top-k by the k-th largest value (ties kept, exact radix select), first argmax for greedy,
// Gumbel-max with float64 scores. top-p needs a sorted prefix and is not done here
// (the runtime samples such rows on the host).
struct SampleJob {
  uint64_t seed;
  int32_t cond_row;    // row of logits
  int32_t uncond_row;  // < 0: no guidance
  float weight;        // guidance weight, float as the CPU path rounds it
  float divisor;       // float(max(temperature, 1e-5))
  int32_t gen_index;   // RNG counter word 1
  int32_t image;       // RNG counter word 2
  int32_t top_k;       // 0: off
  int32_t greedy;      // 1: first argmax, no RNG
  int32_t out_index;   // tokens[out_index] = the token
  int32_t reserved;
};
Status sample_tokens(const float* logits, int64_t vocab, const SampleJob* jobs, int64_t num_jobs, int32_t* tokens,
                     Stream stream);
}  // namespace cuda

}  // namespace lpd::kernels
