// A bundle's schedules on the C++ side: schedules/steps{S}.npz files and the manifest entries
// that name them, plus the rules lpd_engine.Generator uses to turn (steps or group sizes, seed)
// into group sizes and one order per image, so a C++ caller gets the images Python gets.
//
//   const lpd::BundleSchedules& s = engine.schedules();
//   lpd::ImageSchedule plan = s.for_steps(20, seed, batch);   // group sizes + orders [batch, N]
//   double cfg = s.default_cfg(20);                             // manifest default_cfg, else 1.0
//
// Rules (python/lpd_engine/generator.py, docs/rng.md):
//   by steps S: group sizes = the bundle's schedule for S; image i's order = its precomputed
//     order pick(seed, i) = philox(seed, i / 4, 0, 0, kStreamOrderPick)[i % 4] mod count.
//   by explicit group sizes g: the same picks when the bundle's schedule for len(g) steps has
//     exactly g; otherwise locality order i of `seed` (lpd::locality_orders, proximity 1.0,
//     repulsion default_repulsion(grid)), made on the spot.
//
// Files are read on first use, not at bundle open: a bundle has up to ~10 of them (8 MB each
// as int64 at 32 x 32 with 1000 orders) and a request uses one; open_bundle has already checked
// their sizes and sha256, and the first use checks both again (the file may have changed since)
// before parsing. A malformed file is an Error(kBundle) naming it, raised by the request that
// needs it; a step count the bundle lacks is an Error(kInvalidSchedule) listing those it has.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "lpd/json.h"

namespace lpd {

// The content of one schedule file (lpd_engine.schedule.save_schedule), validated.
struct ScheduleFile {
  std::vector<int64_t> group_sizes;  // [num_steps], positive, summing to num_tokens
  std::vector<int64_t> orders;       // [num_orders, num_tokens], each row a permutation
  int64_t num_orders = 0, num_tokens = 0, grid = 0;
  // Scalar metadata, when the file has it.
  std::optional<uint64_t> seed;
  std::optional<double> repulsion, proximity;
  std::optional<std::string> kind;

  int64_t num_steps() const { return static_cast<int64_t>(group_sizes.size()); }
  const int64_t* order(int64_t j) const { return orders.data() + j * num_tokens; }
};

// Parses and validates a schedule .npz held in memory (Error(kBundle) messages start with `name`):
// group_sizes 1-D integers >= 1 summing to N, orders 2-D integer [count, N] permutations,
// grid * grid == N, only the known scalar metadata (grid, seed, repulsion, proximity, kind).
ScheduleFile parse_schedule_file(const uint8_t* data, size_t size, const std::string& name);
ScheduleFile read_schedule_file(const std::string& path);

// lpd_engine.schedule.default_repulsion: 2.0 at grid 16, 4.0 at grid 32, else
// max(1, round-half-even(grid / 8)).
double default_repulsion(int64_t grid);

// Which of `count` precomputed orders image `image` of a request with `seed` uses (docs/rng.md).
int64_t order_pick(uint64_t seed, int64_t image, int64_t count);

// Group sizes and per-image orders of one request.
struct ImageSchedule {
  std::vector<int64_t> group_sizes;  // [num_steps]
  std::vector<int64_t> orders;       // [batch, num_tokens]
};

// The manifest's "schedules" and "default_cfg" over one bundle directory. Thread-safe.
class BundleSchedules {
 public:
  // Checks the manifest entries (Error(kBundle)); reads no schedule file yet.
  BundleSchedules(std::string dir, const Json& manifest, int64_t num_tokens, bool verify_hashes);

  std::vector<int64_t> steps() const;  // step counts with a schedule, ascending
  bool has(int64_t steps) const { return entries_.count(steps) != 0; }
  // The manifest's published guidance for `steps`, 1.0 where it has none.
  double default_cfg(int64_t steps) const;
  // The schedule for `steps`, loaded on first use. Error(kInvalidSchedule) listing the bundle's
  // step counts when it has none for `steps`; Error(kBundle) when its file is malformed.
  const ScheduleFile& get(int64_t steps) const;

  // Request by step count: the bundle's group sizes for `steps`, image i's precomputed order
  // pick(seed, first_image + i).
  ImageSchedule for_steps(int64_t steps, uint64_t seed, int64_t batch, uint32_t first_image = 0) const;
  // Orders [batch, N] for explicit group sizes (validated: ScheduleError -> kInvalidSchedule),
  // as lpd_engine.Generator._default_orders makes them, for images first_image ...
  std::vector<int64_t> default_orders(const std::vector<int64_t>& group_sizes, uint64_t seed, int64_t batch,
                                      uint32_t first_image = 0) const;

 private:
  struct Entry {
    std::string file;
    int64_t count = 0;
    std::optional<int64_t> size;
    std::optional<std::string> sha256;
  };
  std::string dir_;
  int64_t num_tokens_ = 0, grid_ = 0;
  bool verify_hashes_ = true;
  std::map<int64_t, Entry> entries_;
  std::map<int64_t, double> default_cfg_;
  mutable std::mutex mutex_;
  mutable std::map<int64_t, std::unique_ptr<ScheduleFile>> loaded_;
};

}  // namespace lpd
