// VQ decoder operators on channels-last images ([height * width, channels], one image):
// 3x3 / 1x1 convolutions (im2col in row chunks + the packed GEMM), nearest 2x upsampling and
// the single-head spatial attention of LlamaGen's AttnBlock. Weights are packed with
// gemm_pack from the torch layout [c_out, c_in, kh, kw] = [c_out, c_in * kh * kw].
#pragma once

#include <cstddef>
#include <cstdint>

#include "lpd/kernels/common.h"
#include "lpd/kernels/gemm.h"

namespace lpd::kernels {

// out [h*w, c_out] = conv(x [h*w, c_in]) with a kernel x kernel filter (1 or 3), stride 1,
// zero padding kernel / 2. packed_w: gemm_pack of [c_out, c_in * kernel * kernel].
// epilogue kAccumulate adds into out (residual). scratch: conv2d_scratch_floats floats.
size_t conv2d_scratch_floats(int64_t height, int64_t width, int64_t c_in, int64_t kernel);
Status conv2d(const float* x, int64_t height, int64_t width, int64_t c_in, const float* packed_w, const float* bias,
              int64_t c_out, int64_t kernel, Epilogue epilogue, float* scratch, float* out);

// out [(2h)*(2w), c] = nearest 2x upsample of x [h*w, c].
Status upsample_nearest2x(const float* x, int64_t height, int64_t width, int64_t channels, float* out);

// Single-head attention over pixels: out[i] = sum_j softmax_j(q[i].k[j] * scale) v[j].
// q, k, v, out: [num_pixels, channels]. scratch: spatial_attention_scratch_floats floats.
size_t spatial_attention_scratch_floats(int64_t num_pixels, int64_t channels);
Status spatial_attention(const float* q, const float* k, const float* v, int64_t num_pixels, int64_t channels,
                         float scale, float* scratch, float* out);

}  // namespace lpd::kernels
