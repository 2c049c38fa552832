// CPU guidance and sampling, step for step the arithmetic of python/lpd_engine/sampling.py
// (lpd/kernels/sampling.h). The order of every float operation matters here: it is what lets
// tokens match the Python backends exactly.
#include <algorithm>
#include <cmath>
#include <numeric>

#include "lpd/kernels/sampling.h"

namespace lpd::kernels {

Status guidance_combine(const float* cond, const float* uncond, const float* weights, float* out, int64_t ld,
                        int64_t num_rows, int64_t vocab) {
  if (!cond || !uncond || !weights || !out || vocab <= 0 || ld < vocab || num_rows < 0)
    return Status::kInvalidArgument;
  for (int64_t r = 0; r < num_rows; ++r) {
    const float w = weights[r];
    const float* c = cond + r * ld;
    const float* u = uncond + r * ld;
    float* o = out + r * ld;
    for (int64_t v = 0; v < vocab; ++v) {
      const float diff = c[v] - u[v];
      const float scaled = w * diff;
      o[v] = u[v] + scaled;
    }
  }
  return Status::kOk;
}

size_t sample_workspace_bytes(int64_t vocab) {
  const size_t v = static_cast<size_t>(vocab);
  return v * (sizeof(double) + 2 * sizeof(float) + sizeof(int32_t) + 1) + 64;
}

static int64_t first_argmax(const float* x, int64_t n) {
  int64_t best = 0;
  for (int64_t i = 1; i < n; ++i)
    if (x[i] > x[best]) best = i;
  return best;
}

Status sample_row(const float* logits, int64_t vocab, const SampleParams& params, const double* uniforms,
                  void* workspace, int64_t* token) {
  if (!logits || !token || vocab <= 0 || params.temperature < 0 || params.top_k < 0 || !(params.top_p > 0.0) ||
      params.top_p > 1.0)
    return Status::kInvalidArgument;
  if (params.temperature == 0.0 || params.top_k == 1) {
    *token = first_argmax(logits, vocab);
    return Status::kOk;
  }
  if (!uniforms || !workspace) return Status::kInvalidArgument;
  const size_t v = static_cast<size_t>(vocab);
  double* e = static_cast<double*>(workspace);
  float* s = reinterpret_cast<float*>(e + v);
  float* sorted = s + v;
  int32_t* order = reinterpret_cast<int32_t*>(sorted + v);
  unsigned char* keep = reinterpret_cast<unsigned char*>(order + v);

  const float divisor = static_cast<float>(std::max(params.temperature, 1e-5));
  for (int64_t i = 0; i < vocab; ++i) {
    s[i] = logits[i] / divisor;
    keep[i] = 1;
  }
  if (params.top_k > 0 && params.top_k < vocab) {
    std::copy(s, s + vocab, sorted);
    std::nth_element(sorted, sorted + (params.top_k - 1), sorted + vocab, std::greater<float>());
    const float kth = sorted[params.top_k - 1];
    for (int64_t i = 0; i < vocab; ++i) keep[i] = s[i] >= kth;
  }
  if (params.top_p < 1.0) {
    int64_t n = 0;
    for (int64_t i = 0; i < vocab; ++i)
      if (keep[i]) order[n++] = static_cast<int32_t>(i);
    std::stable_sort(order, order + n, [s](int32_t a, int32_t b) { return -s[a] < -s[b]; });
    const double top = static_cast<double>(s[order[0]]);
    double total = 0.0;
    for (int64_t i = 0; i < n; ++i) {
      e[i] = std::exp(static_cast<double>(s[order[i]]) - top);
      total += e[i];
    }
    const double limit = params.top_p * total;
    double prefix = 0.0;
    for (int64_t i = 0; i < n; ++i) {
      keep[order[i]] = (i == 0 || prefix <= limit) ? 1 : 0;
      prefix += e[i];
    }
  }
  int64_t best = -1;
  double best_score = -INFINITY;
  for (int64_t i = 0; i < vocab; ++i) {
    if (!keep[i]) continue;
    const double score = static_cast<double>(s[i]) - std::log(-std::log(uniforms[i]));
    if (best < 0 || score > best_score) {
      best = i;
      best_score = score;
    }
  }
  *token = best < 0 ? 0 : best;
  return Status::kOk;
}

}  // namespace lpd::kernels
