// Shared vocabulary of the lpd kernels: the status every launcher returns, and the CPU thread
// count. Kernel headers are framework-free (STYLE.md habit 1): raw pointers, explicit sizes,
// a Status back, never an exception. The CPU implementations live in csrc/cpu/; CUDA ones will
// sit behind the same signatures (plus a stream) in csrc/cuda/.
#pragma once

#include <cstdint>

struct CUstream_st;  // cudaStream_t without the CUDA headers

namespace lpd::kernels {

enum class Status : int {
  kOk = 0,
  kInvalidArgument = -1,  // a null pointer, a non-positive size, an inconsistent shape
  kUnsupported = -2,      // a shape or option this implementation does not cover
  kDeviceError = -3,      // a CUDA launch or library call failed (csrc/cuda only)
};

inline const char* status_string(Status s) {
  switch (s) {
    case Status::kOk: return "ok";
    case Status::kInvalidArgument: return "invalid argument";
    case Status::kUnsupported: return "unsupported";
    case Status::kDeviceError: return "device error";
  }
  return "unknown";
}

// Threads the CPU kernels use (default: all hardware threads). Results never depend on it:
// every output element is computed by one thread in a fixed order.
void set_num_threads(int num_threads);
int num_threads();

// The CUDA launchers (csrc/cuda/, built when a CUDA compiler is found) sit in lpd::kernels::cuda
// beside the CPU ones in each family header. They take device pointers and a stream, never
// synchronise, and return kDeviceError when a launch fails. bf16 tensors travel as raw 16-bit
// words here so that callers need no CUDA header.
namespace cuda {
using Stream = CUstream_st*;
using bf16 = uint16_t;  // bit pattern of a bfloat16 (__nv_bfloat16 inside csrc/cuda)
// Element type of the tensors a launcher takes as untyped pointers. kBF16 is the engine's GPU
// precision; kF32 is its float32 mode (the CPU path's tokens on the GPU).
enum class DType : int { kBF16 = 0, kF32 = 1 };
inline int64_t dtype_size(DType t) { return t == DType::kF32 ? 4 : 2; }
}  // namespace cuda

}  // namespace lpd::kernels
