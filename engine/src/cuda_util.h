// Host-side helpers shared by the GPU decoders (cuda_decoder.cpp, cuda_vq_decoder.cpp): error
// checks that throw lpd::Error, float -> bf16 rounding, and a growable device buffer.
// Internal to engine/src; built only with LPD_WITH_CUDA.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <cstring>
#include <string>

#include "lpd/errors.h"
#include "lpd/kernels/common.h"

namespace lpd::cuda_util {

inline void cuda_check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) fail(ErrorKind::kInternal, std::string("CUDA ") + what + ": " + cudaGetErrorString(e));
}

inline void check(kernels::Status s, const char* what) {
  if (s != kernels::Status::kOk)
    fail(ErrorKind::kInternal, std::string(what) + " (CUDA) failed: " + kernels::status_string(s));
}

inline uint16_t to_bf16(float f) {  // round to nearest even; NaN stays NaN
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

template <typename T>
struct DeviceBuffer {
  T* ptr = nullptr;
  size_t count = 0;
  DeviceBuffer() = default;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  void resize(size_t n) {  // grows only; contents are not kept
    if (n <= count) return;
    if (ptr) cudaFree(ptr);
    ptr = nullptr;
    count = 0;
    cuda_check(cudaMalloc(&ptr, n * sizeof(T)), "cudaMalloc");
    count = n;
  }
  ~DeviceBuffer() {
    if (ptr) cudaFree(ptr);
  }
};

}  // namespace lpd::cuda_util
