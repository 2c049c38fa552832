// CPU LayerNorm, GroupNorm(+swish) and exact GELU (lpd/kernels/norm.h). Statistics in double
// so the float32 outputs sit within rounding of the PyTorch reference.
#include <cmath>

#include "lpd/kernels/norm.h"

namespace lpd::kernels {

Status layer_norm(const float* x, int64_t ldx, const float* gamma, const float* beta, float eps, float* out,
                  int64_t ldo, int64_t num_rows, int64_t dim) {
  if (!x || !gamma || !beta || !out || dim <= 0 || num_rows < 0) return Status::kInvalidArgument;
#pragma omp parallel for schedule(static) if (num_rows * dim > 65536)
  for (int64_t r = 0; r < num_rows; ++r) {
    const float* xr = x + r * ldx;
    float* o = out + r * ldo;
    double sum = 0.0;
    for (int64_t i = 0; i < dim; ++i) sum += xr[i];
    const double mean = sum / dim;
    double var = 0.0;
    for (int64_t i = 0; i < dim; ++i) {
      const double d = xr[i] - mean;
      var += d * d;
    }
    const float rstd = static_cast<float>(1.0 / std::sqrt(var / dim + eps));
    const float fmean = static_cast<float>(mean);
    for (int64_t i = 0; i < dim; ++i) o[i] = (xr[i] - fmean) * rstd * gamma[i] + beta[i];
  }
  return Status::kOk;
}

Status group_norm(const float* x, const float* gamma, const float* beta, float eps, bool swish, float* out,
                  int64_t num_pixels, int64_t channels, int64_t groups) {
  if (!x || !gamma || !beta || !out || num_pixels <= 0 || channels <= 0 || groups <= 0 || channels % groups)
    return Status::kInvalidArgument;
  const int64_t per = channels / groups;
#pragma omp parallel for schedule(static)
  for (int64_t g = 0; g < groups; ++g) {
    double sum = 0.0;
    for (int64_t p = 0; p < num_pixels; ++p)
      for (int64_t c = g * per; c < (g + 1) * per; ++c) sum += x[p * channels + c];
    const double count = static_cast<double>(num_pixels * per);
    const double mean = sum / count;
    double var = 0.0;
    for (int64_t p = 0; p < num_pixels; ++p)
      for (int64_t c = g * per; c < (g + 1) * per; ++c) {
        const double d = x[p * channels + c] - mean;
        var += d * d;
      }
    const float rstd = static_cast<float>(1.0 / std::sqrt(var / count + eps));
    const float fmean = static_cast<float>(mean);
    for (int64_t p = 0; p < num_pixels; ++p)
      for (int64_t c = g * per; c < (g + 1) * per; ++c) {
        float y = (x[p * channels + c] - fmean) * rstd * gamma[c] + beta[c];
        if (swish) y = y / (1.0f + std::exp(-y));
        out[p * channels + c] = y;
      }
  }
  return Status::kOk;
}

Status gelu_erf(float* x, int64_t n) {
  if (!x || n < 0) return Status::kInvalidArgument;
  for (int64_t i = 0; i < n; ++i) x[i] = x[i] * 0.5f * (1.0f + std::erf(x[i] * 0.70710678118654752440f));
  return Status::kOk;
}

}  // namespace lpd::kernels
