// Typed errors of the C++ runtime. Every check on a bundle or a request throws one of these
// before any compute; the C API (engine/src/c_api.cpp) turns them into lpd_status codes and
// the pybind11 module into the matching lpd_engine.errors classes. The status values are the
// negative codes of engine.h.
#pragma once

#include <stdexcept>
#include <string>

namespace lpd {

enum class ErrorKind : int {
  kInvalidArgument = -1,  // LPD_STATUS_INVALID_ARGUMENT
  kInvalidLabel = -2,     // LPD_STATUS_INVALID_LABEL
  kInvalidSampling = -3,  // LPD_STATUS_INVALID_SAMPLING
  kInvalidSchedule = -4,  // LPD_STATUS_INVALID_SCHEDULE
  kBundle = -5,           // LPD_STATUS_BUNDLE_ERROR
  kTooLarge = -6,         // LPD_STATUS_REQUEST_TOO_LARGE: more KV blocks than the whole pool
  kUnknownRequest = -7,   // LPD_STATUS_UNKNOWN_REQUEST
  kInternal = -100,       // LPD_STATUS_INTERNAL
};

struct Error : std::runtime_error {
  Error(ErrorKind kind, const std::string& message) : std::runtime_error(message), kind(kind) {}
  ErrorKind kind;
};

[[noreturn]] inline void fail(ErrorKind kind, const std::string& message) { throw Error(kind, message); }

}  // namespace lpd
