// The .npz schedule reader (lpd/npz.h, lpd/schedule_file.h):
//   - the demo bundle's files, written by numpy (np.savez: ZIP64 local headers, '<i8', '<u2',
//     '<f8', '<U8'), parse to what Python reads, and row j is locality order j of the seed;
//   - order picks and the bundle-level rules (by steps, default orders) match lpd_engine;
//   - files written here with .npy versions 1, 2 and 3 and other integer dtypes parse;
//   - truncated, corrupted, compressed (a np.savez_compressed fixture) and malformed files are
//     refused with Error(kBundle) naming the file and the problem.
// usage: test_schedule_file DEMO_BUNDLE_DIR COMPRESSED_FIXTURE
#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "lpd/errors.h"
#include "lpd/json.h"
#include "lpd/npz.h"
#include "lpd/schedule.h"
#include "lpd/schedule_file.h"
#include "npz_writer.h"
#include "test_util.h"

namespace {

// Expects Error(kind) whose message contains `needle`.
bool refuses(lpd::ErrorKind kind, const std::string& needle, const std::function<void()>& f) {
  try {
    f();
  } catch (const lpd::Error& e) {
    if (e.kind == kind && std::string(e.what()).find(needle) != std::string::npos) return true;
    std::printf("  kind %d, message: %s (wanted '%s')\n", static_cast<int>(e.kind), e.what(), needle.c_str());
    return false;
  }
  std::printf("  no error (wanted '%s')\n", needle.c_str());
  return false;
}

lpd::ScheduleFile parse(const std::vector<uint8_t>& bytes) {
  return lpd::parse_schedule_file(bytes.data(), bytes.size(), "test.npz");
}

std::vector<int64_t> locality(int64_t grid, const std::vector<int64_t>& g, uint64_t seed, double repulsion,
                              int64_t first, int64_t count) {
  std::vector<int64_t> out(static_cast<size_t>(count * grid * grid));
  lpd::locality_orders({grid, g, seed, repulsion, 1.0}, first, count, out.data(), 1);
  return out;
}

void test_demo_bundle(const std::string& dir) {
  const std::string path = dir + "/schedules/steps20.npz";
  const lpd::ScheduleFile s = lpd::read_schedule_file(path);
  const std::vector<int64_t> g20 = {1, 2, 4, 5, 7, 8, 10, 11, 12, 14, 15, 16, 17, 18, 18, 19, 19, 20, 20, 20};
  CHECK(s.group_sizes == g20);
  CHECK(s.num_orders == 1000 && s.num_tokens == 256 && s.grid == 16);
  CHECK(s.seed && *s.seed == 0);
  CHECK(s.repulsion && *s.repulsion == 2.0);
  CHECK(s.proximity && *s.proximity == 1.0);
  CHECK(s.kind && *s.kind == "locality");
  for (int64_t j : {0, 999}) {  // row j is locality order j of the file's seed
    const std::vector<int64_t> expect = locality(16, g20, 0, 2.0, j, 1);
    CHECK(std::equal(expect.begin(), expect.end(), s.order(j)));
  }

  // The bundle-level view over the demo manifest.
  const std::vector<uint8_t> text = read_bytes(dir + "/manifest.json");
  const lpd::Json manifest = lpd::Json::parse(std::string(text.begin(), text.end()));
  const lpd::BundleSchedules b(dir, manifest, 256, true);
  CHECK((b.steps() == std::vector<int64_t>{8, 12, 16, 20, 24, 32, 64, 128, 256}));
  CHECK(b.default_cfg(20) == 3.0);  // the demo manifest records guidance 3.0 for every step count
  const lpd::ImageSchedule r = b.for_steps(20, 5, 6);
  CHECK(r.group_sizes == g20 && r.orders.size() == 6 * 256);
  // lpd_engine.schedule.order_picks(5, 6, 1000) and order_picks(2**64 - 1, 5, 7).
  const int64_t picks[6] = {127, 234, 216, 726, 242, 601};
  for (int64_t i = 0; i < 6; ++i) {
    CHECK(lpd::order_pick(5, i, 1000) == picks[i]);
    CHECK(std::equal(s.order(picks[i]), s.order(picks[i]) + 256, r.orders.data() + i * 256));
  }
  // A request for images 2.. with first_image = 2 picks the orders of images 2.. of the batch.
  const lpd::ImageSchedule tail = b.for_steps(20, 5, 4, 2);
  for (int64_t i = 0; i < 4; ++i) {
    CHECK(std::equal(s.order(picks[i + 2]), s.order(picks[i + 2]) + 256, tail.orders.data() + i * 256));
  }
  const int64_t picks_max[5] = {3, 1, 2, 2, 6};
  for (int64_t i = 0; i < 5; ++i) CHECK(lpd::order_pick(~uint64_t(0), i, 7) == picks_max[i]);
  CHECK(b.default_orders(g20, 5, 6) == r.orders);  // the bundle's group sizes: its precomputed orders
  std::vector<int64_t> other = g20;                 // other group sizes of 20 steps: made on the spot
  std::swap(other[5], other[6]);
  CHECK(b.default_orders(other, 5, 3) == locality(16, other, 5, 2.0, 0, 3));
  CHECK(refuses(lpd::ErrorKind::kInvalidSchedule, "available step counts: 8, 12, 16, 20, 24, 32, 64, 128, 256",
                [&] { b.for_steps(10, 0, 1); }));
  CHECK(refuses(lpd::ErrorKind::kInvalidSchedule, "steps must be >= 1", [&] { b.for_steps(0, 0, 1); }));
  CHECK(refuses(lpd::ErrorKind::kInvalidSchedule, "sum to", [&] { b.default_orders({1, 2}, 0, 1); }));

  // Damaged copies of a real file: every truncation, a flipped data byte, a renamed entry.
  const std::vector<uint8_t> good = read_bytes(path);
  for (size_t keep : {size_t(0), size_t(21), size_t(100), good.size() / 2, good.size() - 22, good.size() - 1})
    CHECK(refuses(lpd::ErrorKind::kBundle, "test.npz", [&] { parse(std::vector<uint8_t>(good.begin(), good.begin() + keep)); }));
  std::vector<uint8_t> flipped = good;
  flipped[good.size() / 2] ^= 0x01;  // inside orders.npy
  CHECK(refuses(lpd::ErrorKind::kBundle, "'orders.npy': CRC-32 mismatch", [&] { parse(flipped); }));
  std::vector<uint8_t> renamed = good;
  renamed[30] = 'G';  // first local header's name: "group_sizes.npy" -> "Group_sizes.npy"
  CHECK(refuses(lpd::ErrorKind::kBundle, "local header names", [&] { parse(renamed); }));
  std::vector<uint8_t> resized = good;
  resized[6] ^= 0x08;  // first local header: data-descriptor flag on -> sizes from the directory
  CHECK(parse(resized).group_sizes == g20);
  resized = good;
  resized[14] ^= 0x01;  // first local header's CRC
  CHECK(refuses(lpd::ErrorKind::kBundle, "disagree on CRC-32 or sizes", [&] { parse(resized); }));
}

void test_written_files() {
  const std::vector<int64_t> g = {1, 5, 5, 5};
  const std::vector<int64_t> orders = locality(4, g, 3, 1.0, 0, 2);
  for (int version : {1, 2, 3}) {
    const lpd::ScheduleFile s = parse(schedule_npz(g, orders, 16, 4, 3, 1.0, version));
    CHECK(s.group_sizes == g && s.orders == orders && s.num_orders == 2 && s.grid == 4);
    CHECK(s.seed && *s.seed == 3 && s.kind && *s.kind == "locality");
  }
  // Other integer dtypes, no metadata (grid from N), a Fortran flag on a 1-D array.
  for (const char* descr : {"<i8", "<i4", "<u4", "<i2", "|u1", "<u1"}) {
    const size_t item = static_cast<size_t>(descr[2] - '0');
    const lpd::ScheduleFile s = parse(zip_bytes({{"group_sizes.npy", npy_bytes("<i4", {4}, le_bytes(g, 4), 1, true)},
                                                 {"orders.npy", npy_bytes(descr, {2, 16}, le_bytes(orders, item))}}));
    CHECK(s.orders == orders && s.group_sizes == g && s.grid == 4 && !s.seed && !s.kind);
  }

  auto with = [&](const std::string& name, const std::vector<uint8_t>& npy) {
    std::vector<std::pair<std::string, std::vector<uint8_t>>> e = {
        {"group_sizes.npy", npy_bytes("<i8", {4}, le_bytes(g, 8))}, {"orders.npy", npy_bytes("<u2", {2, 16}, le_bytes(orders, 2))}};
    bool replaced = false;
    for (auto& [n, bytes] : e)
      if (n == name) bytes = npy, replaced = true;
    if (!replaced) e.push_back({name, npy});
    return zip_bytes(e);
  };
  using K = lpd::ErrorKind;
  CHECK(refuses(K::kBundle, "big-endian", [&] { parse(with("orders.npy", npy_bytes(">u2", {2, 16}, le_bytes(orders, 2)))); }));
  CHECK(refuses(K::kBundle, "Fortran-order", [&] { parse(with("orders.npy", npy_bytes("<u2", {2, 16}, le_bytes(orders, 2), 1, true))); }));
  CHECK(refuses(K::kBundle, "(truncated)", [&] { parse(with("orders.npy", npy_bytes("<u2", {2, 16}, le_bytes(orders, 1)))); }));
  CHECK(refuses(K::kBundle, "expected integers", [&] { parse(with("orders.npy", npy_bytes("<f8", {2, 16}, le_bytes(orders, 8)))); }));
  CHECK(refuses(K::kBundle, "unsupported dtype", [&] { parse(with("orders.npy", npy_bytes("<c16", {2, 16}, {}))); }));
  CHECK(refuses(K::kBundle, "format version 4", [&] { parse(with("orders.npy", npy_bytes("<u2", {2, 16}, le_bytes(orders, 2), 4))); }));
  CHECK(refuses(K::kBundle, "must be 2-D", [&] { parse(with("orders.npy", npy_bytes("<u2", {32}, le_bytes(orders, 2)))); }));
  std::vector<int64_t> repeat = orders;
  repeat[16 + 3] = repeat[16 + 4];
  CHECK(refuses(K::kBundle, "orders[1]: order repeats cell", [&] { parse(with("orders.npy", npy_bytes("<u2", {2, 16}, le_bytes(repeat, 2)))); }));
  CHECK(refuses(K::kBundle, "sum to 15", [&] { parse(with("group_sizes.npy", npy_bytes("<i8", {4}, le_bytes({1, 5, 5, 4}, 8)))); }));
  CHECK(refuses(K::kBundle, "unexpected entry 'extra'", [&] { parse(with("extra.npy", npy_bytes("<i8", {}, le_bytes({1}, 8)))); }));
  CHECK(refuses(K::kBundle, "unexpected entry 'grid' of shape [1]", [&] { parse(with("grid.npy", npy_bytes("<i8", {1}, le_bytes({4}, 8)))); }));
  CHECK(refuses(K::kBundle, "do not fill a 3x3 grid", [&] { parse(with("grid.npy", npy_bytes("<i8", {}, le_bytes({3}, 8)))); }));
  CHECK(refuses(K::kBundle, "not a .npy array", [&] { parse(with("notes.txt", {'h', 'i'})); }));
  CHECK(refuses(K::kBundle, "lacks the array 'orders'", [&] {
    parse(zip_bytes({{"group_sizes.npy", npy_bytes("<i8", {4}, le_bytes(g, 8))}}));
  }));
  CHECK(refuses(K::kBundle, "not a ZIP archive", [&] { parse(npy_bytes("<i8", {4}, le_bytes(g, 8))); }));
}

void test_bundle_entries(const std::string& fixture) {
  // np.savez_compressed output: refused by name, before any inflating.
  CHECK(refuses(lpd::ErrorKind::kBundle, "'group_sizes.npy': is compressed (ZIP method 8, deflate)",
                [&] { lpd::read_schedule_file(fixture); }));
  CHECK(refuses(lpd::ErrorKind::kBundle, "cannot open", [&] { lpd::read_schedule_file(fixture + ".missing"); }));

  // A tiny bundle with a steps-4 schedule: the manifest entries and the lazily read file.
  const std::string dir = write_tiny_bundle(temp_dir("schedule_file"));
  add_tiny_schedule(dir, 4, {1, 5, 5, 5}, 3, 9, 2.5);
  auto manifest = [&] {
    const std::vector<uint8_t> t = read_bytes(dir + "/manifest.json");
    return lpd::Json::parse(std::string(t.begin(), t.end()));
  };
  const lpd::BundleSchedules b(dir, manifest(), 16, true);
  CHECK(b.steps() == std::vector<int64_t>{4} && b.default_cfg(4) == 2.5 && b.default_cfg(5) == 1.0);
  CHECK(b.get(4).orders == locality(4, {1, 5, 5, 5}, 9, 1.0, 0, 3));
  CHECK(refuses(lpd::ErrorKind::kBundle, "the manifest says 4 steps and [3, 25]",
                [&] { lpd::BundleSchedules(dir, manifest(), 25, true).get(4); }));
  CHECK(refuses(lpd::ErrorKind::kInvalidSchedule, "available step counts: 4", [&] { b.get(8); }));
  // The file changes after the bundle was opened: the first use notices.
  std::vector<uint8_t> file = read_bytes(dir + "/schedules/steps4.npz");
  const std::string name = "orders.npy";
  const size_t at = static_cast<size_t>(std::search(file.begin(), file.end(), name.begin(), name.end()) - file.begin());
  file[at + name.size() + 64 + 5] ^= 0x01;  // a byte of the orders, after the first local header's name
  write_bytes(dir + "/schedules/steps4.npz", file);
  CHECK(refuses(lpd::ErrorKind::kBundle, "sha256 mismatch", [&] { lpd::BundleSchedules(dir, manifest(), 16, true).get(4); }));
  CHECK(refuses(lpd::ErrorKind::kBundle, "CRC-32 mismatch", [&] { lpd::BundleSchedules(dir, manifest(), 16, false).get(4); }));
  CHECK(b.get(4).num_orders == 3);  // already loaded: kept
  file.pop_back();
  write_bytes(dir + "/schedules/steps4.npz", file);
  CHECK(refuses(lpd::ErrorKind::kBundle, "truncated or replaced", [&] { lpd::BundleSchedules(dir, manifest(), 16, false).get(4); }));

  // Malformed manifest entries are refused when the engine opens the bundle.
  auto entries = [](const std::string& text) { lpd::BundleSchedules(".", lpd::Json::parse(text), 16, true); };
  CHECK(refuses(lpd::ErrorKind::kBundle, "not a step count", [&] { entries("{\"schedules\": {\"x\": {}}}"); }));
  CHECK(refuses(lpd::ErrorKind::kBundle, "not listed under 'files'",
                [&] { entries("{\"schedules\": {\"4\": {\"file\": \"s.npz\", \"count\": 1}}, \"files\": {}}"); }));
  CHECK(refuses(lpd::ErrorKind::kBundle, "outside the bundle",
                [&] { entries("{\"schedules\": {\"4\": {\"file\": \"../s.npz\", \"count\": 1}}}"); }));
  CHECK(refuses(lpd::ErrorKind::kBundle, ">= 0", [&] { entries("{\"default_cfg\": {\"4\": -1}}"); }));
  entries("{}");  // bundles without the fields: no schedules, no defaults
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::printf("usage: test_schedule_file DEMO_BUNDLE_DIR COMPRESSED_FIXTURE\n");
    return 2;
  }
  test_demo_bundle(argv[1]);
  test_written_files();
  test_bundle_entries(argv[2]);
  return finish("test_schedule_file");
}
