// Test helpers that write .npz schedule files from C++: a .npy encoder (format versions 1-3),
// a stored-entry ZIP writer (no ZIP64, which np.savez uses; the demo bundle's files cover that
// form), and add_tiny_schedule(), which gives the tiny bundle of test_util.h a schedule file
// plus a default_cfg entry, so the C API and example tests can request by steps.
#pragma once

#include <cstdint>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <sys/stat.h>
#include <utility>
#include <vector>

#include "lpd/npz.h"
#include "lpd/schedule.h"
#include "lpd/schedule_file.h"
#include "lpd/sha256.h"

// A .npy file: header dict for `descr` and `shape`, padded to 64 bytes, then `data`.
inline std::vector<uint8_t> npy_bytes(const std::string& descr, const std::vector<int64_t>& shape,
                                      const std::vector<uint8_t>& data, int version = 1, bool fortran = false) {
  std::string dict = "{'descr': '" + descr + "', 'fortran_order': " + (fortran ? "True" : "False") + ", 'shape': (";
  for (size_t i = 0; i < shape.size(); ++i) dict += (i ? ", " : "") + std::to_string(shape[i]);
  dict += shape.size() == 1 ? ",), }" : "), }";
  const size_t prefix = version == 1 ? 10 : 12;
  while ((prefix + dict.size() + 1) % 64) dict += ' ';
  dict += '\n';
  std::vector<uint8_t> out = {0x93, 'N', 'U', 'M', 'P', 'Y', static_cast<uint8_t>(version), 0};
  for (size_t b = 0; b < prefix - 8; ++b) out.push_back(static_cast<uint8_t>(dict.size() >> (8 * b)));
  out.insert(out.end(), dict.begin(), dict.end());
  out.insert(out.end(), data.begin(), data.end());
  return out;
}

// Little-endian bytes of integers stored with `itemsize` bytes each.
inline std::vector<uint8_t> le_bytes(const std::vector<int64_t>& values, size_t itemsize) {
  std::vector<uint8_t> out;
  for (int64_t v : values)
    for (size_t b = 0; b < itemsize; ++b) out.push_back(static_cast<uint8_t>(static_cast<uint64_t>(v) >> (8 * b)));
  return out;
}

inline std::vector<uint8_t> f64_bytes(double v) {
  uint64_t bits;
  std::memcpy(&bits, &v, 8);
  return le_bytes({static_cast<int64_t>(bits)}, 8);
}

// A ZIP archive of stored entries (name, bytes), as zipfile writes it without ZIP64.
inline std::vector<uint8_t> zip_bytes(const std::vector<std::pair<std::string, std::vector<uint8_t>>>& entries) {
  std::vector<uint8_t> out, cd;
  auto put = [](std::vector<uint8_t>& v, uint64_t x, int n) {
    for (int b = 0; b < n; ++b) v.push_back(static_cast<uint8_t>(x >> (8 * b)));
  };
  for (const auto& [name, data] : entries) {
    const uint32_t crc = lpd::crc32(data.data(), data.size());
    const size_t offset = out.size();
    put(out, 0x04034b50, 4), put(out, 20, 2), put(out, 0, 2), put(out, 0, 2), put(out, 0, 4);
    put(out, crc, 4), put(out, data.size(), 4), put(out, data.size(), 4), put(out, name.size(), 2), put(out, 0, 2);
    out.insert(out.end(), name.begin(), name.end());
    out.insert(out.end(), data.begin(), data.end());
    put(cd, 0x02014b50, 4), put(cd, 20, 2), put(cd, 20, 2), put(cd, 0, 2), put(cd, 0, 2), put(cd, 0, 4);
    put(cd, crc, 4), put(cd, data.size(), 4), put(cd, data.size(), 4), put(cd, name.size(), 2), put(cd, 0, 2);
    put(cd, 0, 2), put(cd, 0, 2), put(cd, 0, 2), put(cd, 0, 4), put(cd, offset, 4);
    cd.insert(cd.end(), name.begin(), name.end());
  }
  const size_t cd_offset = out.size();
  out.insert(out.end(), cd.begin(), cd.end());
  put(out, 0x06054b50, 4), put(out, 0, 2), put(out, 0, 2), put(out, entries.size(), 2), put(out, entries.size(), 2);
  put(out, cd.size(), 4), put(out, cd_offset, 4), put(out, 0, 2);
  return out;
}

// A schedule .npz as save_schedule writes it: group_sizes <i8, orders <u2, grid, seed, repulsion, kind.
inline std::vector<uint8_t> schedule_npz(const std::vector<int64_t>& group_sizes, const std::vector<int64_t>& orders,
                                         int64_t num_tokens, int64_t grid, uint64_t seed, double repulsion,
                                         int version = 1) {
  const int64_t count = num_tokens ? static_cast<int64_t>(orders.size()) / num_tokens : 0;
  std::vector<uint8_t> kind;
  for (char c : std::string("locality")) kind.insert(kind.end(), {static_cast<uint8_t>(c), 0, 0, 0});
  return zip_bytes({
      {"group_sizes.npy", npy_bytes("<i8", {static_cast<int64_t>(group_sizes.size())}, le_bytes(group_sizes, 8), version)},
      {"orders.npy", npy_bytes("<u2", {count, num_tokens}, le_bytes(orders, 2), version)},
      {"grid.npy", npy_bytes("<i8", {}, le_bytes({grid}, 8), version)},
      {"seed.npy", npy_bytes("<u8", {}, le_bytes({static_cast<int64_t>(seed)}, 8), version)},
      {"repulsion.npy", npy_bytes("<f8", {}, f64_bytes(repulsion), version)},
      {"proximity.npy", npy_bytes("<f8", {}, f64_bytes(1.0), version)},
      {"kind.npy", npy_bytes("<U8", {}, kind, version)},
  });
}

// Adds schedules/steps{S}.npz (`count` locality orders of `seed` for group_sizes) and
// default_cfg {S: cfg} to a bundle written by write_tiny_bundle (grid x grid tokens).
inline void add_tiny_schedule(const std::string& dir, int64_t grid, const std::vector<int64_t>& group_sizes,
                              int64_t count, uint64_t seed, double cfg) {
  const int64_t n = grid * grid, steps = static_cast<int64_t>(group_sizes.size());
  const double repulsion = lpd::default_repulsion(grid);
  std::vector<int64_t> orders(static_cast<size_t>(count * n));
  lpd::locality_orders({grid, group_sizes, seed, repulsion, 1.0}, 0, count, orders.data(), 1);
  const std::vector<uint8_t> file = schedule_npz(group_sizes, orders, n, grid, seed, repulsion);
  const std::string rel = "schedules/steps" + std::to_string(steps) + ".npz";
  mkdir((dir + "/schedules").c_str(), 0755);
  std::ofstream(dir + "/" + rel, std::ios::binary).write(reinterpret_cast<const char*>(file.data()),
                                                         static_cast<std::streamsize>(file.size()));
  std::stringstream text;
  text << std::ifstream(dir + "/manifest.json").rdbuf();
  std::string m = text.str();
  auto replace = [&](const std::string& from, const std::string& to) {
    const size_t at = m.find(from);
    if (at != std::string::npos) m.replace(at, from.size(), to);
  };
  std::ostringstream cfg_text;
  cfg_text << cfg;
  const std::string s = std::to_string(steps);
  replace("\"default_cfg\": {}", "\"default_cfg\": {\"" + s + "\": " + cfg_text.str() + "}");
  replace("\"schedules\": {}", "\"schedules\": {\"" + s + "\": {\"file\": \"" + rel + "\", \"count\": " +
                                   std::to_string(count) + ", \"repulsion\": " + std::to_string(repulsion) +
                                   ", \"proximity\": 1.0, \"seed\": " + std::to_string(seed) + "}}");
  replace("\"files\": {", "\"files\": {\"" + rel + "\": {\"size\": " + std::to_string(file.size()) +
                              ", \"sha256\": \"" + lpd::sha256_hex(file.data(), file.size()) + "\"}, ");
  std::ofstream(dir + "/manifest.json") << m;
}
