// The LlamaGen VQ decoder on the GPU: token ids -> RGB uint8, the same network as
// lpd/vq_decoder.h (lpd-facts.md §5) in bf16 NHWC with float32 accumulation.
//
// Convolutions go through cuDNN, 1x1 convolutions and the 16x16 spatial attention through
// cuBLASLt, GroupNorm (+ swish), upsampling and the uint8 conversion through csrc/cuda kernels.
// The codebook lookup and post_quant_conv are one table ([codebook_size, z_channels], computed
// in float32 at load). Images go through in chunks of max_batch() images, so the activation
// memory is fixed at construction: 4 bf16 buffers of max_batch() x the largest level
// (pixels x channels), within activation_bytes (at least one image, at most 64), plus a
// 256 MiB cuDNN workspace. A chunk size seen before replays as a CUDA graph. Built only with
// LPD_WITH_CUDA; this header needs no CUDA header.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>

#include "lpd/bundle.h"

namespace lpd {

class CudaVqDecoder {
 public:
  // Uploads the bundle's VQ decoder weights (bf16) and allocates the chunk buffers.
  // InvalidArgument when a channel count is not a multiple of 8 (tensor-core layouts).
  CudaVqDecoder(const Bundle& bundle, int64_t grid, size_t activation_bytes);
  ~CudaVqDecoder();
  CudaVqDecoder(const CudaVqDecoder&) = delete;
  CudaVqDecoder& operator=(const CudaVqDecoder&) = delete;

  // tokens: [batch, grid * grid] raster-order codes (host); rgb: [batch, H, W, 3] (host).
  // InvalidArgument for a code outside [0, codebook_size), before any GPU work. Thread-safe.
  void decode(const int64_t* tokens, int64_t batch, uint8_t* rgb);
  int64_t image_size() const;
  int64_t max_batch() const;
  int64_t device_bytes() const { return device_bytes_; }  // weights + buffers + workspace

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::mutex mutex_;
  int64_t device_bytes_ = 0;
};

}  // namespace lpd
