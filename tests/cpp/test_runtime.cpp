// The request runtime on a tiny bundle: request validation with typed errors, refusal of a
// request larger than the whole KV pool, FIFO queueing when the pool is short (every request
// completes with the tokens of an unconstrained run), continuous batching (requests mixed at
// different steps give the tokens they give alone), release of queued requests.
#include <numeric>
#include <string>

#include "lpd/runtime.h"
#include "test_util.h"

using lpd::ErrorKind;

static lpd::RequestSpec spec(std::vector<int64_t> labels, std::vector<int64_t> groups, double cfg, uint64_t seed,
                             double temperature = 1.0) {
  lpd::RequestSpec s;
  s.labels = std::move(labels);
  s.group_sizes = std::move(groups);
  for (size_t b = 0; b < s.labels.size(); ++b)
    for (int64_t t = 0; t < 16; ++t) s.orders.push_back((t * 5 + int64_t(b) * 3) % 16);  // permutations
  s.sampling.cfg = cfg;
  s.sampling.seed = seed;
  s.sampling.temperature = temperature;
  s.decode_pixels = false;
  return s;
}

int main() {
  const std::string dir = write_tiny_bundle(temp_dir("runtime"));
  lpd::EngineOptions big;
  big.kv_pool_blocks = 64;
  lpd::Engine engine(dir, big);
  CHECK(engine.blocks_for(1, false) == 2 && engine.blocks_for(3, true) == 12);  // 17 slots -> 2 blocks of 16

  // Validation.
  auto bad = [&](ErrorKind kind, lpd::RequestSpec s, const char* what) {
    CHECK(throws_kind(kind, [&] { engine.submit(s); }, what));
  };
  bad(ErrorKind::kInvalidLabel, spec({}, {1, 15}, 1, 0), "no labels");
  bad(ErrorKind::kInvalidLabel, spec({10}, {1, 15}, 1, 0), "label out of range");
  bad(ErrorKind::kInvalidLabel, spec({-1}, {1, 15}, 1, 0), "negative label");
  bad(ErrorKind::kInvalidSchedule, spec({1}, {1, 14}, 1, 0), "group sizes sum");
  bad(ErrorKind::kInvalidSchedule, spec({1}, {}, 1, 0), "no group sizes");
  bad(ErrorKind::kInvalidSchedule, spec({1}, {1, 0, 15}, 1, 0), "zero group");
  auto dup = spec({1}, {1, 15}, 1, 0);
  dup.orders[3] = dup.orders[4];
  bad(ErrorKind::kInvalidSchedule, dup, "order not a permutation");
  auto short_orders = spec({1, 2}, {1, 15}, 1, 0);
  short_orders.orders.resize(20);
  bad(ErrorKind::kInvalidSchedule, short_orders, "orders length");
  bad(ErrorKind::kInvalidSampling, spec({1}, {1, 15}, -1, 0), "negative cfg");
  bad(ErrorKind::kInvalidSampling, spec({1}, {1, 15}, NAN, 0), "nan cfg");
  bad(ErrorKind::kInvalidSampling, spec({1}, {1, 15}, 1, 0, -0.5), "negative temperature");
  auto topp = spec({1}, {1, 15}, 1, 0);
  topp.sampling.top_p = 0.0;
  bad(ErrorKind::kInvalidSampling, topp, "top_p 0");
  auto topk = spec({1}, {1, 15}, 1, 0);
  topk.sampling.top_k = -2;
  bad(ErrorKind::kInvalidSampling, topk, "negative top_k");
  CHECK(throws_kind(ErrorKind::kUnknownRequest, [&] { engine.state(999); }, "unknown id"));

  // Reference tokens, each request alone.
  const std::vector<lpd::RequestSpec> specs = {
      spec({1, 2, 3}, {1, 2, 5, 8}, 3.0, 7),               // guided, 4 steps
      spec({4}, std::vector<int64_t>(16, 1), 1.0, 11),      // unguided, 16 steps (raster-like)
      spec({5, 6}, {1, 15}, 2.0, 3, 0.0),                   // guided greedy, 2 steps
      spec({7, 8, 9, 0}, {1, 3, 3, 3, 6}, 1.0, 5),          // unguided, 5 steps
  };
  std::vector<std::vector<int64_t>> alone;
  for (const auto& s : specs) alone.push_back(engine.generate(s).tokens);

  // Mixed: submitted at different times into one engine.
  {
    std::vector<int64_t> ids;
    ids.push_back(engine.submit(specs[0]));
    engine.step();
    ids.push_back(engine.submit(specs[1]));
    engine.step();
    engine.step();
    ids.push_back(engine.submit(specs[2]));
    ids.push_back(engine.submit(specs[3]));
    while (engine.step() > 0) {}
    for (size_t i = 0; i < ids.size(); ++i) CHECK(engine.take(ids[i]).tokens == alone[i]);
  }

  // A pool of 12 blocks: request 0 (12 blocks) fills it; the others queue and still finish.
  lpd::EngineOptions small;
  small.kv_pool_blocks = 12;
  lpd::Engine tight(dir, small);
  CHECK(throws_kind(ErrorKind::kTooLarge, [&] { tight.submit(spec({1, 2, 3, 4}, {1, 15}, 2.0, 0)); }, "oversize"));
  {
    std::vector<int64_t> ids;
    for (const auto& s : specs) ids.push_back(tight.submit(s));
    tight.step();
    CHECK(tight.state(ids[0]) == lpd::RequestState::kRunning);
    CHECK(tight.state(ids[1]) == lpd::RequestState::kQueued);
    CHECK(tight.free_blocks() == 0);
    int64_t steps = 0;
    while (tight.step() > 0) ++steps;
    CHECK(tight.free_blocks() == 12);
    for (size_t i = 0; i < ids.size(); ++i) CHECK(tight.take(ids[i]).tokens == alone[i]);
    // A queued request can be released; a running one cannot.
    const int64_t a = tight.submit(specs[0]), b = tight.submit(specs[1]);
    tight.step();
    CHECK(throws_kind(ErrorKind::kInvalidArgument, [&] { tight.release(a); }, "release running"));
    tight.release(b);
    CHECK(throws_kind(ErrorKind::kUnknownRequest, [&] { tight.state(b); }, "released"));
    while (tight.step() > 0) {}
    CHECK(tight.take(a).tokens == alone[0]);
  }
  // Pool size in bytes: 2 layers x 16 slots x 32 floats x 2 (K, V) x 4 bytes = 8192 per block.
  lpd::EngineOptions bytes;
  bytes.kv_pool_bytes = 8192 * 5 + 100;
  CHECK(lpd::Engine(dir, bytes).num_blocks() == 5);
  bytes.kv_pool_bytes = 100;
  CHECK(throws_kind(ErrorKind::kInvalidArgument, [&] { lpd::Engine e(dir, bytes); }, "pool too small"));

  // Pixels come back with the right shape.
  auto with_pixels = spec({1}, {1, 15}, 1.0, 0);
  with_pixels.decode_pixels = true;
  const lpd::RequestResult r = engine.generate(with_pixels);
  CHECK(r.height == 8 && r.width == 8 && r.pixels.size() == 8 * 8 * 3);
  return finish("test_runtime");
}
