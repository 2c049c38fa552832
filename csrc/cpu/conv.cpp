// CPU VQ decoder operators on channels-last images (lpd/kernels/conv.h). Convolutions are
// im2col over chunks of output rows followed by the packed GEMM, so scratch stays bounded
// (a few MB) at any resolution; the spatial attention is two GEMMs around a row softmax.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "lpd/kernels/conv.h"

namespace lpd::kernels {
namespace {

constexpr int64_t kConvChunkPixels = 1024;

}  // namespace

size_t conv2d_scratch_floats(int64_t height, int64_t width, int64_t c_in, int64_t kernel) {
  if (kernel == 1) return 0;
  const int64_t pixels = std::min<int64_t>(height * width, kConvChunkPixels);
  return static_cast<size_t>(pixels * c_in * kernel * kernel);
}

Status conv2d(const float* x, int64_t height, int64_t width, int64_t c_in, const float* packed_w, const float* bias,
              int64_t c_out, int64_t kernel, Epilogue epilogue, float* scratch, float* out) {
  if (!x || !packed_w || !out || height <= 0 || width <= 0 || c_in <= 0 || c_out <= 0) return Status::kInvalidArgument;
  if (kernel == 1) return gemm(x, c_in, packed_w, bias, out, c_out, height * width, c_out, c_in, epilogue);
  if (kernel != 3) return Status::kUnsupported;
  if (!scratch) return Status::kInvalidArgument;
  const int64_t pixels = height * width, kdim = c_in * 9;
  for (int64_t p0 = 0; p0 < pixels; p0 += kConvChunkPixels) {
    const int64_t n = std::min(kConvChunkPixels, pixels - p0);
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) {
      const int64_t y = (p0 + i) / width, xx = (p0 + i) % width;
      float* col = scratch + i * kdim;
      // Column layout c_in-major then (ky, kx), matching torch's [c_out, c_in, 3, 3] weights.
      for (int64_t ky = 0; ky < 3; ++ky)
        for (int64_t kx = 0; kx < 3; ++kx) {
          const int64_t sy = y + ky - 1, sx = xx + kx - 1;
          const bool inside = sy >= 0 && sy < height && sx >= 0 && sx < width;
          const float* src = inside ? x + (sy * width + sx) * c_in : nullptr;
          for (int64_t c = 0; c < c_in; ++c) col[c * 9 + ky * 3 + kx] = inside ? src[c] : 0.0f;
        }
    }
    const Status st = gemm(scratch, kdim, packed_w, bias, out + p0 * c_out, c_out, n, c_out, kdim, epilogue);
    if (st != Status::kOk) return st;
  }
  return Status::kOk;
}

Status upsample_nearest2x(const float* x, int64_t height, int64_t width, int64_t channels, float* out) {
  if (!x || !out || height <= 0 || width <= 0 || channels <= 0) return Status::kInvalidArgument;
  const int64_t w2 = 2 * width;
  for (int64_t y = 0; y < 2 * height; ++y)
    for (int64_t xx = 0; xx < w2; ++xx)
      std::memcpy(out + (y * w2 + xx) * channels, x + ((y / 2) * width + xx / 2) * channels,
                  sizeof(float) * channels);
  return Status::kOk;
}

size_t spatial_attention_scratch_floats(int64_t num_pixels, int64_t channels) {
  const int64_t packed = static_cast<int64_t>(std::max(gemm_packed_size(num_pixels, channels),
                                                       gemm_packed_size(channels, num_pixels)));
  return static_cast<size_t>(num_pixels * num_pixels + packed);
}

Status spatial_attention(const float* q, const float* k, const float* v, int64_t num_pixels, int64_t channels,
                         float scale, float* scratch, float* out) {
  if (!q || !k || !v || !scratch || !out || num_pixels <= 0 || channels <= 0) return Status::kInvalidArgument;
  float* scores = scratch;  // [num_pixels (queries), num_pixels (keys)]
  float* packed = scratch + num_pixels * num_pixels;
  Status st = gemm_pack(k, num_pixels, channels, channels, 1, packed);
  if (st != Status::kOk) return st;
  st = gemm(q, channels, packed, nullptr, scores, num_pixels, num_pixels, num_pixels, channels, Epilogue::kStore);
  if (st != Status::kOk) return st;
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < num_pixels; ++i) {
    float* row = scores + i * num_pixels;
    float mx = -INFINITY;
    for (int64_t j = 0; j < num_pixels; ++j) {
      row[j] = row[j] * scale;
      mx = std::max(mx, row[j]);
    }
    float sum = 0.0f;
    for (int64_t j = 0; j < num_pixels; ++j) {
      row[j] = std::exp(row[j] - mx);
      sum += row[j];
    }
    const float inv = 1.0f / sum;
    for (int64_t j = 0; j < num_pixels; ++j) row[j] = row[j] * inv;
  }
  // out [pixels, channels] = P [pixels, pixels] . V; as packed weight: [channels, pixels] = V^T.
  st = gemm_pack(v, channels, num_pixels, 1, channels, packed);
  if (st != Status::kOk) return st;
  return gemm(scores, num_pixels, packed, nullptr, out, channels, num_pixels, channels, num_pixels, Epilogue::kStore);
}

}  // namespace lpd::kernels
