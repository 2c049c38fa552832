// Header-only C++ RAII wrapper over the C API (lpd/engine.h): an owning, move-only engine
// handle whose methods throw lpd::api::Error (with the lpd_status and lpd_last_error()) where the
// C functions return a negative status. Nothing here links beyond the C ABI.
//
//   lpd::api::Engine engine("bundle/");
//   lpd_request_params req = lpd_request_default_params();   // ... labels, group sizes, orders
//   int64_t id = engine.submit(req);
//   engine.wait(id);
//   std::vector<uint8_t> rgb = engine.pixels(id);               // [images, H, W, 3]
//   engine.release(id);
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "lpd/engine.h"

namespace lpd::api {

class Error : public std::runtime_error {
 public:
  Error(lpd_status status, const std::string& message) : std::runtime_error(message), status_(status) {}
  lpd_status status() const { return status_; }

 private:
  lpd_status status_;
};

// Returns non-negative statuses, throws Error on negative ones.
inline lpd_status check(lpd_status status) {
  if (status < 0) throw Error(status, lpd_last_error());
  return status;
}

struct ResultShape {
  int64_t num_images = 0, num_tokens = 0, height = 0, width = 0;
};

class Engine {
 public:
  explicit Engine(const std::string& bundle_dir, const lpd_engine_params& params = lpd_engine_default_params()) {
    check(lpd_engine_init(bundle_dir.c_str(), &params, &handle_));
  }
  ~Engine() { lpd_engine_free(handle_); }
  Engine(Engine&& other) noexcept : handle_(std::exchange(other.handle_, nullptr)) {}
  Engine& operator=(Engine&& other) noexcept {
    if (this != &other) {
      lpd_engine_free(handle_);
      handle_ = std::exchange(other.handle_, nullptr);
    }
    return *this;
  }
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  lpd_engine* get() const { return handle_; }

  lpd_engine_info info() const {
    lpd_engine_info out{};
    check(lpd_engine_get_info(handle_, &out));
    return out;
  }
  // The request's id; *queued (optional) tells whether it waits for KV blocks.
  int64_t submit(const lpd_request_params& request, bool* queued = nullptr) {
    int64_t id = 0;
    const lpd_status s = check(lpd_engine_submit(handle_, &request, &id));
    if (queued) *queued = s == LPD_STATUS_QUEUED;
    return id;
  }
  // A request by step count (lpd_engine_submit_steps): the bundle's schedule, as the Python
  // Generator picks it; request's group sizes and orders must be empty.
  int64_t submit_steps(const lpd_request_params& request, int64_t steps, bool* queued = nullptr) {
    int64_t id = 0;
    const lpd_status s = check(lpd_engine_submit_steps(handle_, &request, steps, &id));
    if (queued) *queued = s == LPD_STATUS_QUEUED;
    return id;
  }
  // Default parameters for `steps` steps, with the bundle's guidance (lpd_engine_request_defaults).
  lpd_request_params request_defaults(int64_t steps) const {
    lpd_request_params out = lpd_request_default_params();
    check(lpd_engine_request_defaults(handle_, steps, &out));
    return out;
  }
  // Requests still queued or running after the step.
  int64_t step() {
    int64_t active = 0;
    check(lpd_engine_step(handle_, &active));
    return active;
  }
  // LPD_STATUS_OK (done), LPD_STATUS_QUEUED or LPD_STATUS_RUNNING.
  lpd_status poll(int64_t id) const { return check(lpd_engine_poll(handle_, id)); }
  void wait(int64_t id) { check(lpd_engine_wait(handle_, id)); }
  ResultShape shape(int64_t id) const {
    ResultShape s;
    check(lpd_engine_get_result_shape(handle_, id, &s.num_images, &s.num_tokens, &s.height, &s.width));
    return s;
  }
  std::vector<int64_t> tokens(int64_t id) const {
    const ResultShape s = shape(id);
    std::vector<int64_t> out(static_cast<size_t>(s.num_images * s.num_tokens));
    check(lpd_engine_get_tokens(handle_, id, out.data(), out.size()));
    return out;
  }
  std::vector<uint8_t> pixels(int64_t id) const {
    const ResultShape s = shape(id);
    std::vector<uint8_t> out(static_cast<size_t>(s.num_images * s.height * s.width * 3));
    check(lpd_engine_get_pixels(handle_, id, out.data(), out.size()));
    return out;
  }
  void release(int64_t id) { check(lpd_engine_release(handle_, id)); }

 private:
  lpd_engine* handle_ = nullptr;
};

}  // namespace lpd::api
