// Normalisations: LayerNorm over the last dimension (the transformer, eps 1e-6) and
// GroupNorm (+ optional swish) over channels-last images (the VQ decoder, 32 groups, eps 1e-6).
// Statistics are accumulated in double, outputs are float32.
#pragma once

#include <cstddef>
#include <cstdint>

#include "lpd/kernels/common.h"

namespace lpd::kernels {

// out[r, :] = (x[r, :] - mean) / sqrt(var + eps) * gamma + beta, for r < num_rows.
// x and out have row strides ldx / ldo (in floats); they may be the same buffer.
Status layer_norm(const float* x, int64_t ldx, const float* gamma, const float* beta, float eps, float* out,
                  int64_t ldo, int64_t num_rows, int64_t dim);

// x, out: [num_pixels, channels] (channels-last, one image); may alias. groups divides channels.
// With swish, out = y * sigmoid(y) of the normalised y.
Status group_norm(const float* x, const float* gamma, const float* beta, float eps, bool swish, float* out,
                  int64_t num_pixels, int64_t channels, int64_t groups);

// Exact GELU x * 0.5 * (1 + erf(x / sqrt(2))), in place over n floats.
Status gelu_erf(float* x, int64_t n);

namespace cuda {
// out[r, :] = LayerNorm(x[src, :]) with src = row_index ? row_index[r] : r, as bf16 or float32;
// float32 x and statistics (two passes), any dim. Used for LN1/LN2 and for the final norm of
// the logit rows.
Status layer_norm(const float* x, int64_t ldx, const int32_t* row_index, const float* gamma, const float* beta,
                  float eps, bf16* out, int64_t ldo, int64_t num_rows, int64_t dim, Stream stream);
Status layer_norm(const float* x, int64_t ldx, const int32_t* row_index, const float* gamma, const float* beta,
                  float eps, float* out, int64_t ldo, int64_t num_rows, int64_t dim, Stream stream);
// Exact GELU in place over n bf16 or float32 values (float32 erf inside).
Status gelu_erf(bf16* x, int64_t n, Stream stream);
Status gelu_erf(float* x, int64_t n, Stream stream);

// GroupNorm over a batch of channels-last bf16 images x [n, pixels, channels] (+ bias[channels],
// may be null), in two steps. group_norm_stats writes mean and 1 / sqrt(var + eps) of each
// (image, group) to stats [n, groups, 2] (float32): per-block partial sums in `workspace`
// (group_norm_workspace_floats floats) reduced in a fixed order in float64, so the result is
// the same every run. With fold it also writes x + bias back into x (rounded to bf16; the
// statistics are those of the rounded values). group_norm_apply then writes out = y or
// y * sigmoid(y) (swish), y = (x + bias - mean) * rstd * gamma + beta, float32 inside.
// channels a multiple of 8 and of groups, at most 2048; out may alias x.
size_t group_norm_workspace_floats(int64_t n, int64_t pixels, int64_t channels, int64_t groups);
Status group_norm_stats(bf16* x, const bf16* bias, bool fold, int64_t n, int64_t pixels, int64_t channels,
                        int64_t groups, float eps, float* workspace, float* stats, Stream stream);
Status group_norm_apply(const bf16* x, const bf16* bias, const float* stats, const float* gamma, const float* beta,
                        bool swish, int64_t n, int64_t pixels, int64_t channels, int64_t groups, bf16* out,
                        Stream stream);
}  // namespace cuda

}  // namespace lpd::kernels
