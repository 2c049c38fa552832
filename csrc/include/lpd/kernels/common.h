// Shared vocabulary of the lpd kernels: the status every launcher returns, and the CPU thread
// count. Kernel headers are framework-free (STYLE.md habit 1): raw pointers, explicit sizes,
// a Status back, never an exception. The CPU implementations live in csrc/cpu/; CUDA ones will
// sit behind the same signatures (plus a stream) in csrc/cuda/.
#pragma once

#include <cstdint>

namespace lpd::kernels {

enum class Status : int {
  kOk = 0,
  kInvalidArgument = -1,  // a null pointer, a non-positive size, an inconsistent shape
  kUnsupported = -2,      // a shape or option this implementation does not cover
};

inline const char* status_string(Status s) {
  switch (s) {
    case Status::kOk: return "ok";
    case Status::kInvalidArgument: return "invalid argument";
    case Status::kUnsupported: return "unsupported";
  }
  return "unknown";
}

// Threads the CPU kernels use (default: all hardware threads). Results never depend on it:
// every output element is computed by one thread in a fixed order.
void set_num_threads(int num_threads);
int num_threads();

}  // namespace lpd::kernels
