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

}  // namespace lpd::kernels
