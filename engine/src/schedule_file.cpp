// Schedule files and the bundle's schedule entries (lpd/schedule_file.h): parsing through the
// .npz reader, the same checks as lpd_engine.schedule.load_schedule + Bundle.schedule, and the
// Generator's rules for picking group sizes and orders.
#include "lpd/schedule_file.h"

#include <algorithm>
#include <cmath>

#include "lpd/errors.h"
#include "lpd/npz.h"
#include "lpd/read_file.h"
#include "lpd/rng.h"
#include "lpd/schedule.h"
#include "lpd/sha256.h"

namespace lpd {
namespace {

[[noreturn]] void bad(const std::string& where, const std::string& what) { fail(ErrorKind::kBundle, where + ": " + what); }

std::string shape_str(const std::vector<int64_t>& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

// A manifest key that must be a step count: decimal digits, no sign, >= 1.
int64_t steps_key(const std::string& key, const char* field) {
  bool ok = !key.empty() && key.size() <= 9;
  for (char ch : key) ok = ok && ch >= '0' && ch <= '9';
  if (!ok || std::stoll(key) < 1)
    fail(ErrorKind::kBundle, std::string("manifest: ") + field + " key '" + key + "' is not a step count");
  return std::stoll(key);
}

}  // namespace

ScheduleFile parse_schedule_file(const uint8_t* data, size_t size, const std::string& name) {
  std::map<std::string, NpyArray> arrays = parse_npz(data, size, name);
  for (const char* key : {"group_sizes", "orders"})
    if (!arrays.count(key)) bad(name, std::string("lacks the array '") + key + "'");
  ScheduleFile s;
  const NpyArray& orders = arrays.at("orders");
  if (orders.shape.size() != 2) bad(name, "orders must be 2-D [num_orders, num_tokens], got shape " + shape_str(orders.shape));
  s.num_orders = orders.shape[0];
  s.num_tokens = orders.shape[1];
  const NpyArray& sizes = arrays.at("group_sizes");
  if (sizes.shape.size() != 1) bad(name, "group_sizes must be 1-D, got shape " + shape_str(sizes.shape));
  s.group_sizes = sizes.to_int64(name + ": group_sizes");
  s.orders = orders.to_int64(name + ": orders");
  try {
    validate_group_sizes(s.group_sizes.data(), s.group_sizes.size(), s.num_tokens);
  } catch (const ScheduleError& e) {
    bad(name, e.what());
  }
  for (int64_t j = 0; j < s.num_orders; ++j) {
    try {
      validate_order(s.order(j), s.num_tokens);
    } catch (const ScheduleError& e) {
      bad(name, "orders[" + std::to_string(j) + "]: " + e.what());
    }
  }
  for (const auto& [key, a] : arrays) {
    if (key == "group_sizes" || key == "orders") continue;
    const std::string where = name + ": " + key;
    if (!a.shape.empty()) bad(name, "unexpected entry '" + key + "' of shape " + shape_str(a.shape));
    if (key == "grid") s.grid = static_cast<int64_t>(a.scalar_uint64(where));
    else if (key == "seed") s.seed = a.scalar_uint64(where);
    else if (key == "repulsion") s.repulsion = a.scalar_double(where);
    else if (key == "proximity") s.proximity = a.scalar_double(where);
    else if (key == "kind") s.kind = a.scalar_string(where);
    else bad(name, "unexpected entry '" + key + "'");
  }
  if (!arrays.count("grid")) s.grid = static_cast<int64_t>(std::llround(std::sqrt(static_cast<double>(s.num_tokens))));
  if (s.grid * s.grid != s.num_tokens)
    bad(name, std::to_string(s.num_tokens) + " tokens do not fill a " + std::to_string(s.grid) + "x" +
                  std::to_string(s.grid) + " grid");
  return s;
}

ScheduleFile read_schedule_file(const std::string& path) {
  const std::vector<uint8_t> bytes = read_file(path);
  return parse_schedule_file(bytes.data(), bytes.size(), path);
}

double default_repulsion(int64_t grid) {
  if (grid == 16) return 2.0;
  if (grid == 32) return 4.0;
  // Python's round() is half to even, as nearbyint is in the default rounding mode.
  return std::max(1.0, std::nearbyint(static_cast<double>(grid) / 8.0));
}

int64_t order_pick(uint64_t seed, int64_t image, int64_t count) {
  const auto words = philox4x32(seed, static_cast<uint32_t>(image / 4), 0, 0, kStreamOrderPick);
  return static_cast<int64_t>(words[static_cast<size_t>(image % 4)] % static_cast<uint64_t>(count));
}

BundleSchedules::BundleSchedules(std::string dir, const Json& manifest, int64_t num_tokens, bool verify_hashes)
    : dir_(std::move(dir)), num_tokens_(num_tokens), verify_hashes_(verify_hashes) {
  grid_ = static_cast<int64_t>(std::llround(std::sqrt(static_cast<double>(num_tokens))));
  const Json* files = manifest.find("files");
  // Bundles written before schedules existed may lack these fields: no schedules, no defaults.
  if (const Json* schedules = manifest.find("schedules")) {
    for (const auto& [key, value] : schedules->object("schedules")) {
      const int64_t steps = steps_key(key, "schedules");
      Entry e;
      e.file = value.at("file").string("schedules file");
      e.count = value.at("count").integer("schedules count");
      if (e.count < 1) fail(ErrorKind::kBundle, "manifest: schedule for " + key + " steps has count " +
                                                    std::to_string(e.count) + " (needs >= 1)");
      if (e.file.find("..") != std::string::npos || e.file.empty() || e.file[0] == '/')
        fail(ErrorKind::kBundle, "manifest: schedule file outside the bundle: " + e.file);
      const Json* listed = files ? files->find(e.file) : nullptr;
      if (!listed) fail(ErrorKind::kBundle, "manifest: schedule file " + e.file + " is not listed under 'files'");
      if (const Json* size = listed->find("size")) e.size = size->integer("size");
      if (const Json* digest = listed->find("sha256")) e.sha256 = digest->string("sha256");
      entries_[steps] = e;
    }
  }
  if (const Json* cfg = manifest.find("default_cfg")) {
    for (const auto& [key, value] : cfg->object("default_cfg")) {
      const double w = value.number("default_cfg value");
      if (!std::isfinite(w) || w < 0)
        fail(ErrorKind::kBundle, "manifest: default_cfg for " + key + " steps must be a finite number >= 0");
      default_cfg_[steps_key(key, "default_cfg")] = w;
    }
  }
}

std::vector<int64_t> BundleSchedules::steps() const {
  std::vector<int64_t> out;
  for (const auto& [steps, entry] : entries_) out.push_back(steps);
  return out;
}

double BundleSchedules::default_cfg(int64_t steps) const {
  auto it = default_cfg_.find(steps);
  return it == default_cfg_.end() ? 1.0 : it->second;
}

const ScheduleFile& BundleSchedules::get(int64_t steps) const {
  auto entry = entries_.find(steps);
  if (entry == entries_.end()) {
    std::string have;
    for (const auto& [s, e] : entries_) have += (have.empty() ? "" : ", ") + std::to_string(s);
    fail(ErrorKind::kInvalidSchedule, "this bundle has no schedule for " + std::to_string(steps) + " steps; " +
                                          (have.empty() ? std::string("it has none (pass explicit group sizes)")
                                                        : "available step counts: " + have));
  }
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = loaded_.find(steps);
  if (it != loaded_.end()) return *it->second;
  const Entry& e = entry->second;
  const std::string path = dir_ + "/" + e.file;
  const std::vector<uint8_t> bytes = read_file(path);
  if (e.size && static_cast<int64_t>(bytes.size()) != *e.size)
    bad(path, std::to_string(bytes.size()) + " bytes, the manifest says " + std::to_string(*e.size) +
                  " (truncated or replaced since the bundle was opened?)");
  if (verify_hashes_ && e.sha256 && sha256_hex(bytes.data(), bytes.size()) != *e.sha256)
    bad(path, "sha256 mismatch (corrupt or modified since the bundle was built)");
  auto s = std::make_unique<ScheduleFile>(parse_schedule_file(bytes.data(), bytes.size(), path));
  if (s->num_steps() != steps || s->num_orders != e.count || s->num_tokens != num_tokens_)
    bad(path, "holds " + std::to_string(s->num_steps()) + " steps and orders [" + std::to_string(s->num_orders) +
                  ", " + std::to_string(s->num_tokens) + "]; the manifest says " + std::to_string(steps) +
                  " steps and [" + std::to_string(e.count) + ", " + std::to_string(num_tokens_) + "]");
  return *loaded_.emplace(steps, std::move(s)).first->second;
}

ImageSchedule BundleSchedules::for_steps(int64_t steps, uint64_t seed, int64_t batch, uint32_t first_image) const {
  if (steps < 1) fail(ErrorKind::kInvalidSchedule, "steps must be >= 1, got " + std::to_string(steps));
  if (batch < 0) fail(ErrorKind::kInvalidArgument, "batch must be >= 0");
  const ScheduleFile& s = get(steps);
  ImageSchedule out;
  out.group_sizes = s.group_sizes;
  out.orders.reserve(static_cast<size_t>(batch * num_tokens_));
  for (int64_t i = 0; i < batch; ++i) {
    const int64_t* order = s.order(order_pick(seed, first_image + i, s.num_orders));
    out.orders.insert(out.orders.end(), order, order + num_tokens_);
  }
  return out;
}

std::vector<int64_t> BundleSchedules::default_orders(const std::vector<int64_t>& group_sizes, uint64_t seed,
                                                     int64_t batch, uint32_t first_image) const {
  if (batch < 0) fail(ErrorKind::kInvalidArgument, "batch must be >= 0");
  try {
    validate_group_sizes(group_sizes.data(), group_sizes.size(), num_tokens_);
  } catch (const ScheduleError& e) {
    fail(ErrorKind::kInvalidSchedule, e.what());
  }
  const int64_t steps = static_cast<int64_t>(group_sizes.size());
  if (has(steps) && get(steps).group_sizes == group_sizes) return for_steps(steps, seed, batch, first_image).orders;
  std::vector<int64_t> out(static_cast<size_t>(batch * num_tokens_));
  const LocalityParams params{grid_, group_sizes, seed, default_repulsion(grid_), 1.0};
  try {
    locality_orders(params, first_image, batch, out.data());
  } catch (const ScheduleError& e) {
    fail(ErrorKind::kInvalidSchedule, e.what());
  }
  return out;
}

}  // namespace lpd
