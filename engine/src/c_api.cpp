// The C API (lpd/engine.h) over lpd::Engine. The one place where exceptions become statuses:
// every entry point is noexcept and records the message in a thread-local string.
#include "lpd/engine.h"

#include <algorithm>
#include <cstring>
#include <exception>
#include <memory>
#include <new>
#include <string>

#include "lpd/errors.h"
#include "lpd/runtime.h"
#include "lpd/schedule.h"

struct lpd_engine {
  std::unique_ptr<lpd::Engine> engine;
};

namespace {

thread_local std::string g_last_error;

lpd_status set_error(lpd_status status, const char* message) {
  g_last_error = message;
  return status;
}

template <class F>
lpd_status guarded(F&& f) noexcept {
  try {
    g_last_error.clear();
    return f();
  } catch (const lpd::Error& e) {
    return set_error(static_cast<lpd_status>(e.kind), e.what());
  } catch (const lpd::ScheduleError& e) {
    return set_error(LPD_STATUS_INVALID_SCHEDULE, e.what());
  } catch (const std::bad_alloc&) {
    return set_error(LPD_STATUS_INTERNAL, "out of memory");
  } catch (const std::exception& e) {
    return set_error(LPD_STATUS_INTERNAL, e.what());
  } catch (...) {
    return set_error(LPD_STATUS_INTERNAL, "unknown error");
  }
}

lpd_status need(bool ok, const char* what) {
  if (!ok) lpd::fail(lpd::ErrorKind::kInvalidArgument, what);
  return LPD_STATUS_OK;
}

// The request's fields as a RequestSpec (arrays copied).
lpd::RequestSpec spec_from(const lpd_request_params* r) {
  need(r->num_labels == 0 || r->labels, "lpd_engine_submit: labels is NULL");
  need(r->num_steps == 0 || r->group_sizes, "lpd_engine_submit: group_sizes is NULL");
  need(r->num_order_entries == 0 || r->orders, "lpd_engine_submit: orders is NULL");
  lpd::RequestSpec spec;
  spec.labels.assign(r->labels, r->labels + r->num_labels);
  spec.group_sizes.assign(r->group_sizes, r->group_sizes + r->num_steps);
  spec.orders.assign(r->orders, r->orders + r->num_order_entries);
  if (r->cfg_schedule != LPD_CFG_LINEAR && r->cfg_schedule != LPD_CFG_CONSTANT)
    lpd::fail(lpd::ErrorKind::kInvalidSampling, "cfg_schedule must be LPD_CFG_LINEAR or LPD_CFG_CONSTANT");
  spec.sampling.cfg = r->cfg;
  spec.sampling.cfg_schedule = r->cfg_schedule == LPD_CFG_LINEAR ? lpd::CfgSchedule::kLinear
                                                                 : lpd::CfgSchedule::kConstant;
  spec.sampling.temperature = r->temperature;
  spec.sampling.top_k = r->top_k;
  spec.sampling.top_p = r->top_p;
  spec.sampling.seed = r->seed;
  spec.decode_pixels = r->decode_pixels != 0;
  spec.first_image = r->first_image;
  return spec;
}

// Queues the request: LPD_STATUS_OK when the pool has room for it now, else LPD_STATUS_QUEUED.
lpd_status submit_spec(lpd::Engine& e, lpd::RequestSpec spec, int64_t* out_id) {
  const int64_t need_blocks = e.blocks_for(static_cast<int64_t>(spec.labels.size()), spec.sampling.guided());
  const int64_t ahead = e.queued_blocks();
  *out_id = e.submit(std::move(spec));
  return e.free_blocks() - ahead >= need_blocks ? LPD_STATUS_OK : LPD_STATUS_QUEUED;
}

}  // namespace

extern "C" {

lpd_engine_params lpd_engine_default_params(void) {
  lpd_engine_params p;
  p.kv_pool_bytes = 0;
  p.kv_pool_blocks = 0;
  p.block_size = 16;
  p.num_threads = 0;
  p.verify_hashes = 1;
  p.device = LPD_DEVICE_CPU;
  p.precision = LPD_PRECISION_DEFAULT;
  return p;
}

lpd_request_params lpd_request_default_params(void) {
  lpd_request_params r;
  std::memset(&r, 0, sizeof(r));
  r.cfg = 1.0;
  r.cfg_schedule = LPD_CFG_LINEAR;
  r.temperature = 1.0;
  r.top_k = 0;
  r.top_p = 1.0;
  r.seed = 0;
  r.decode_pixels = 1;
  return r;
}

lpd_status lpd_engine_init(const char* bundle_dir, const lpd_engine_params* params, lpd_engine** out) {
  return guarded([&] {
    need(out != nullptr, "lpd_engine_init: out is NULL");
    *out = nullptr;
    need(bundle_dir != nullptr, "lpd_engine_init: bundle_dir is NULL");
    const lpd_engine_params p = params ? *params : lpd_engine_default_params();
    lpd::EngineOptions o;
    o.kv_pool_bytes = p.kv_pool_bytes;
    o.kv_pool_blocks = p.kv_pool_blocks;
    o.block_size = p.block_size;
    o.num_threads = p.num_threads;
    o.verify_hashes = p.verify_hashes != 0;
    need(p.device == LPD_DEVICE_CPU || p.device == LPD_DEVICE_CUDA,
         "lpd_engine_init: device must be LPD_DEVICE_CPU or LPD_DEVICE_CUDA");
    o.device = p.device == LPD_DEVICE_CUDA ? "cuda" : "cpu";
    need(p.precision == LPD_PRECISION_DEFAULT || p.precision == LPD_PRECISION_FP32 || p.precision == LPD_PRECISION_BF16,
         "lpd_engine_init: precision must be LPD_PRECISION_DEFAULT, LPD_PRECISION_FP32 or LPD_PRECISION_BF16");
    o.precision = p.precision == LPD_PRECISION_FP32 ? "fp32" : p.precision == LPD_PRECISION_BF16 ? "bf16" : "";
    auto handle = std::make_unique<lpd_engine>();
    handle->engine = std::make_unique<lpd::Engine>(bundle_dir, o);
    *out = handle.release();
    return LPD_STATUS_OK;
  });
}

void lpd_engine_free(lpd_engine* engine) { delete engine; }

lpd_status lpd_engine_get_info(const lpd_engine* engine, lpd_engine_info* out) {
  return guarded([&] {
    need(engine && out, "lpd_engine_get_info: NULL argument");
    const lpd::Engine& e = *engine->engine;
    const lpd::TransformerConfig& c = e.config();
    out->dim = c.dim;
    out->depth = c.depth;
    out->heads = c.heads;
    out->vocab_size = c.vocab_size;
    out->num_classes = c.num_classes;
    out->num_tokens = c.num_tokens;
    out->image_size = e.image_size();
    out->num_blocks = e.num_blocks();
    out->block_size = e.block_size();
    out->free_blocks = e.free_blocks();
    out->block_bytes = e.block_bytes();
    return LPD_STATUS_OK;
  });
}

lpd_status lpd_engine_submit(lpd_engine* engine, const lpd_request_params* r, int64_t* out_id) {
  return guarded([&] {
    need(engine && r && out_id, "lpd_engine_submit: NULL argument");
    return submit_spec(*engine->engine, spec_from(r), out_id);
  });
}

lpd_status lpd_engine_request_defaults(const lpd_engine* engine, int64_t steps, lpd_request_params* out) {
  return guarded([&] {
    need(engine && out, "lpd_engine_request_defaults: NULL argument");
    if (steps < 1) lpd::fail(lpd::ErrorKind::kInvalidSchedule, "steps must be >= 1, got " + std::to_string(steps));
    *out = lpd_request_default_params();
    out->cfg = engine->engine->schedules().default_cfg(steps);
    return LPD_STATUS_OK;
  });
}

lpd_status lpd_engine_submit_steps(lpd_engine* engine, const lpd_request_params* r, int64_t steps, int64_t* out_id) {
  return guarded([&] {
    need(engine && r && out_id, "lpd_engine_submit_steps: NULL argument");
    need(!r->group_sizes && !r->num_steps && !r->orders && !r->num_order_entries,
         "lpd_engine_submit_steps: group_sizes and orders must be NULL / 0 (they come from the bundle's schedule)");
    lpd::RequestSpec spec = spec_from(r);
    lpd::ImageSchedule s = engine->engine->schedules().for_steps(steps, spec.sampling.seed,
                                                                 static_cast<int64_t>(spec.labels.size()), spec.first_image);
    spec.group_sizes = std::move(s.group_sizes);
    spec.orders = std::move(s.orders);
    return submit_spec(*engine->engine, std::move(spec), out_id);
  });
}

lpd_status lpd_engine_default_orders(const lpd_engine* engine, const int64_t* group_sizes, size_t num_steps,
                                     uint64_t seed, size_t batch, int64_t* out) {
  return guarded([&] {
    need(engine && (group_sizes || !num_steps) && (out || !batch), "lpd_engine_default_orders: NULL argument");
    const std::vector<int64_t> orders = engine->engine->schedules().default_orders(
        std::vector<int64_t>(group_sizes, group_sizes + num_steps), seed, static_cast<int64_t>(batch));
    std::copy(orders.begin(), orders.end(), out);
    return LPD_STATUS_OK;
  });
}

lpd_status lpd_engine_step(lpd_engine* engine, int64_t* out_active) {
  return guarded([&] {
    need(engine != nullptr, "lpd_engine_step: engine is NULL");
    const int64_t active = engine->engine->step();
    if (out_active) *out_active = active;
    return LPD_STATUS_OK;
  });
}

static lpd_status state_status(lpd::RequestState s) {
  switch (s) {
    case lpd::RequestState::kQueued: return LPD_STATUS_QUEUED;
    case lpd::RequestState::kRunning: return LPD_STATUS_RUNNING;
    case lpd::RequestState::kDone: return LPD_STATUS_OK;
  }
  return LPD_STATUS_INTERNAL;
}

lpd_status lpd_engine_poll(const lpd_engine* engine, int64_t id) {
  return guarded([&] {
    need(engine != nullptr, "lpd_engine_poll: engine is NULL");
    return state_status(engine->engine->state(id));
  });
}

lpd_status lpd_engine_wait(lpd_engine* engine, int64_t id) {
  return guarded([&] {
    need(engine != nullptr, "lpd_engine_wait: engine is NULL");
    while (engine->engine->state(id) != lpd::RequestState::kDone) engine->engine->step();
    return LPD_STATUS_OK;
  });
}

lpd_status lpd_engine_get_result_shape(const lpd_engine* engine, int64_t id, int64_t* num_images,
                                       int64_t* num_tokens, int64_t* height, int64_t* width) {
  return guarded([&] {
    need(engine != nullptr, "lpd_engine_get_result_shape: engine is NULL");
    const lpd::RequestResult& r = engine->engine->result(id);
    if (num_images) *num_images = r.batch;
    if (num_tokens) *num_tokens = r.num_tokens;
    if (height) *height = r.height;
    if (width) *width = r.width;
    return LPD_STATUS_OK;
  });
}

lpd_status lpd_engine_get_tokens(const lpd_engine* engine, int64_t id, int64_t* out, size_t capacity) {
  return guarded([&] {
    need(engine && out, "lpd_engine_get_tokens: NULL argument");
    const lpd::RequestResult& r = engine->engine->result(id);
    if (capacity < r.tokens.size())
      return set_error(LPD_STATUS_BUFFER_TOO_SMALL, ("need " + std::to_string(r.tokens.size()) + " entries").c_str());
    std::memcpy(out, r.tokens.data(), r.tokens.size() * sizeof(int64_t));
    return LPD_STATUS_OK;
  });
}

lpd_status lpd_engine_get_pixels(const lpd_engine* engine, int64_t id, uint8_t* out, size_t capacity) {
  return guarded([&] {
    need(engine && out, "lpd_engine_get_pixels: NULL argument");
    const lpd::RequestResult& r = engine->engine->result(id);
    if (r.pixels.empty()) lpd::fail(lpd::ErrorKind::kInvalidArgument, "request was submitted without decode_pixels");
    if (capacity < r.pixels.size())
      return set_error(LPD_STATUS_BUFFER_TOO_SMALL, ("need " + std::to_string(r.pixels.size()) + " bytes").c_str());
    std::memcpy(out, r.pixels.data(), r.pixels.size());
    return LPD_STATUS_OK;
  });
}

lpd_status lpd_engine_release(lpd_engine* engine, int64_t id) {
  return guarded([&] {
    need(engine != nullptr, "lpd_engine_release: engine is NULL");
    engine->engine->release(id);
    return LPD_STATUS_OK;
  });
}

lpd_status lpd_locality_orders(int64_t grid, const int64_t* group_sizes, size_t num_steps, uint64_t seed,
                               double repulsion, double proximity, int64_t first_index, int64_t count,
                               int64_t* out) {
  return guarded([&] {
    need(group_sizes && out, "lpd_locality_orders: NULL argument");
    const lpd::LocalityParams params{grid, std::vector<int64_t>(group_sizes, group_sizes + num_steps), seed, repulsion,
                                     proximity};
    lpd::locality_orders(params, first_index, count, out);
    return LPD_STATUS_OK;
  });
}

const char* lpd_last_error(void) { return g_last_error.c_str(); }

}  // extern "C"
