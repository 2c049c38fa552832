// VQ decoder operators on channels-last images ([height * width, channels], one image):
// 3x3 / 1x1 convolutions (im2col in row chunks + the packed GEMM), nearest 2x upsampling and
// the single-head spatial attention of LlamaGen's AttnBlock. Weights are packed with
// gemm_pack from the torch layout [c_out, c_in, kh, kw] = [c_out, c_in * kh * kw].
// The CUDA versions (namespace cuda) work on batches of bf16 NHWC images: convolutions through
// cuDNN, and the small operators around them with a per-channel bias folded into their input.
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

namespace cuda {
// Convolutions through cuDNN: y[n, h, w, c_out] (+)= conv(x[n, h, w, c_in]) with a kernel x kernel
// filter (1 or 3), stride 1, zero padding kernel / 2, bf16 in and out, float32 accumulation on
// tensor cores. No bias: the decoder folds each bias into the next operator's input (exact, the
// same float32 add). w is [c_out, kernel, kernel, c_in] (cuDNN's NHWC filter layout). accumulate
// adds into y (the residual add, beta = 1). A ConvContext owns the cuDNN handle, a fixed
// workspace and one plan per shape; the first call of a shape benchmarks cuDNN's algorithms
// (cudnnFindConvolutionForwardAlgorithmEx) writing into `scratch` (y's size; y itself when null
// and not accumulating), later calls only enqueue the convolution.
struct ConvContext;
ConvContext* conv_context_create(size_t workspace_bytes);
void conv_context_destroy(ConvContext* ctx);
struct ConvArgs {
  const bf16* x;
  int64_t n, height, width, c_in;
  const bf16* w;
  int64_t c_out, kernel;
  bf16* y;
  bool accumulate;
  bf16* scratch;
};
Status conv2d(ConvContext* ctx, const ConvArgs& args, Stream stream);

// out[n, 2h, 2w, c] = x[n, h, w, c] + bias[c] (nearest 2x upsampling); bias may be null.
// channels a multiple of 8.
Status upsample_nearest2x(const bf16* x, const bf16* bias, int64_t n, int64_t height, int64_t width,
                          int64_t channels, bf16* out, Stream stream);

// out[r, :] = table[ids[r], :] for r < rows; width a multiple of 8. ids must lie in [0, table_rows)
// (the caller validates them).
Status gather_rows(const bf16* table, const int32_t* ids, int64_t rows, int64_t width, bf16* out, Stream stream);

// Row softmax of the spatial attention scores: p[r, :] = bf16(softmax(s[r, :] * scale)), float32
// s [rows, cols], any cols.
Status softmax_rows(const float* s, int64_t rows, int64_t cols, float scale, bf16* p, Stream stream);

// The decoder's last step: rgb[i, 0..2] = round_half_even(clip((x[i, c] + bias[c] + 1) / 2 * 255,
// 0, 255)) in float32 for pixels i < num_pixels, x with row stride ldx >= 3.
Status to_rgb(const bf16* x, int64_t ldx, const bf16* bias, int64_t num_pixels, uint8_t* rgb, Stream stream);
}  // namespace cuda

}  // namespace lpd::kernels
