// A reader for the .npz files numpy's np.savez writes: a ZIP archive of stored (uncompressed)
// .npy entries. Bundles carry their schedules this way (docs/bundle.md, schedules/steps{S}.npz).
//
// Written here rather than linked (no zlib, no cnpy) because the subset is small and every byte
// of it can be checked: the end-of-central-directory record (ZIP64 too: np.savez forces ZIP64
// local headers), each central-directory entry against its local header (name, method, CRC-32,
// sizes), the data ranges against the file, and the CRC-32 of every entry. Compressed entries
// (np.savez_compressed: method 8, deflate) are refused with a message that says so, as are
// encrypted ones. Each entry is then a .npy array: format version 1, 2 or 3, a little-endian or
// byte-order-free dtype (bool, int8..int64, uint8..uint64, float32/64, unicode '<U'), C order
// (or any order for 0-D/1-D), a shape whose byte size is exactly the entry's data.
// Every problem is an lpd::Error(kBundle) whose message starts with the file's name.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace lpd {

// CRC-32 (ISO-HDLC / zlib polynomial 0xEDB88320), chained through `crc` like zlib's crc32().
uint32_t crc32(const uint8_t* data, size_t size, uint32_t crc = 0);

// One .npy array: its dtype, shape and little-endian element bytes.
struct NpyArray {
  std::string descr;  // as stored, e.g. "<u2", "|u1", "<U8"
  char kind = 0;      // 'b' bool, 'i' signed, 'u' unsigned, 'f' float, 'U' unicode
  size_t itemsize = 0;
  std::vector<int64_t> shape;  // [] for a scalar
  std::vector<uint8_t> data;   // numel() * itemsize bytes, C order

  int64_t numel() const;
  // Integer (or bool) elements as int64; Error(kBundle) for other dtypes or a uint64 > INT64_MAX.
  std::vector<int64_t> to_int64(const std::string& where) const;
  // A 0-D array's value: unsigned / signed integer, float (ints converted), or unicode text (UTF-8).
  uint64_t scalar_uint64(const std::string& where) const;
  double scalar_double(const std::string& where) const;
  std::string scalar_string(const std::string& where) const;
};

// Parses one .npy file held in memory; `where` prefixes error messages.
NpyArray parse_npy(const uint8_t* data, size_t size, const std::string& where);

// Parses an .npz held in memory: entry name without ".npy" -> array. `name` (usually the
// path) prefixes error messages.
std::map<std::string, NpyArray> parse_npz(const uint8_t* data, size_t size, const std::string& name);

// Reads and parses an .npz file.
std::map<std::string, NpyArray> read_npz(const std::string& path);

}  // namespace lpd
