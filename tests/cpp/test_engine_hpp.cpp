// The header-only RAII wrapper (lpd/engine.hpp): construction errors throw with the status,
// a request round trip through it equals the same request through lpd::Engine (explicit and by
// step count), moves transfer ownership. Usage: test_engine_hpp BUNDLE_DIR.
#include "lpd/engine.hpp"

#include "lpd/runtime.h"
#include "test_util.h"

int main(int argc, char** argv) {
  if (argc != 2) return 2;
  try {
    lpd::api::Engine bad("/nonexistent");
    CHECK(false);
  } catch (const lpd::api::Error& e) {
    CHECK(e.status() == LPD_STATUS_BUNDLE_ERROR);
  }
  lpd::api::Engine engine(argv[1]);
  CHECK(engine.info().num_tokens == 16);
  std::vector<int64_t> labels = {4, 2}, groups = {1, 7, 8}, orders;
  for (int b = 0; b < 2; ++b)
    for (int64_t t = 0; t < 16; ++t) orders.push_back((t * 3 + b) % 16);
  lpd_request_params req = lpd_request_default_params();
  req.labels = labels.data();
  req.num_labels = labels.size();
  req.group_sizes = groups.data();
  req.num_steps = groups.size();
  req.orders = orders.data();
  req.num_order_entries = orders.size();
  req.cfg = 3.0;
  req.seed = 9;
  bool queued = true;
  const int64_t id = engine.submit(req, &queued);
  CHECK(!queued);
  lpd::api::Engine moved(std::move(engine));
  CHECK(engine.get() == nullptr && moved.get() != nullptr);
  moved.wait(id);
  CHECK(moved.poll(id) == LPD_STATUS_OK);
  const std::vector<int64_t> tokens = moved.tokens(id);
  CHECK(moved.pixels(id).size() == 2u * 8 * 8 * 3);
  moved.release(id);
  try {
    moved.poll(id);
    CHECK(false);
  } catch (const lpd::api::Error& e) {
    CHECK(e.status() == LPD_STATUS_UNKNOWN_REQUEST);
  }

  lpd::RequestSpec spec;
  spec.labels = labels;
  spec.group_sizes = groups;
  spec.orders = orders;
  spec.sampling.cfg = 3.0;
  spec.sampling.seed = 9;
  spec.decode_pixels = false;
  CHECK(lpd::Engine(argv[1], lpd::EngineOptions()).generate(spec).tokens == tokens);

  // By step count (the tiny bundle's steps-4 schedule, default_cfg 2.5): the lpd::Engine
  // request with the same group sizes and orders from lpd::Engine::schedules().
  lpd_request_params by_steps = moved.request_defaults(4);
  CHECK(by_steps.cfg == 2.5);
  by_steps.labels = labels.data();
  by_steps.num_labels = labels.size();
  by_steps.seed = 9;
  const int64_t steps_id = moved.submit_steps(by_steps, 4);
  moved.wait(steps_id);
  lpd::Engine direct(argv[1], lpd::EngineOptions());
  const lpd::ImageSchedule plan = direct.schedules().for_steps(4, 9, 2);
  spec.group_sizes = plan.group_sizes;
  spec.orders = plan.orders;
  spec.sampling.cfg = 2.5;
  CHECK(direct.generate(spec).tokens == moved.tokens(steps_id));
  try {
    moved.submit_steps(by_steps, 5);
    CHECK(false);
  } catch (const lpd::api::Error& e) {
    CHECK(e.status() == LPD_STATUS_INVALID_SCHEDULE);
  }
  return finish("test_engine_hpp");
}
