// .npz reader: stored ZIP entries holding .npy arrays (lpd/npz.h says what is checked and why).
//
// ZIP layout used below (APPNOTE 6.3.x): local header "PK\3\4" (30 bytes + name + extra) then
// the data; central directory entries "PK\1\2" (46 bytes + name + extra + comment); the end of
// central directory "PK\5\6" (22 bytes + comment), preceded by a ZIP64 locator "PK\6\7" and
// record "PK\6\6" when counts or offsets overflow. A 32-bit field holding 0xFFFFFFFF means
// "see the ZIP64 extra field (id 1)", which lists uncompressed size, compressed size, local
// header offset, in that order, each only when its 32-bit field is 0xFFFFFFFF.
#include "lpd/npz.h"

#include <array>
#include <cstring>
#include <limits>

#include "lpd/errors.h"
#include "lpd/read_file.h"
#include "utf8.h"

namespace lpd {
namespace {

constexpr uint32_t kLocalSig = 0x04034b50, kCentralSig = 0x02014b50, kEndSig = 0x06054b50;
constexpr uint32_t kZip64EndSig = 0x06064b50, kZip64LocatorSig = 0x07064b50;
constexpr uint32_t kMax32 = 0xFFFFFFFFu;

uint16_t u16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
uint32_t u32(const uint8_t* p) { return static_cast<uint32_t>(u16(p)) | (static_cast<uint32_t>(u16(p + 2)) << 16); }
uint64_t u64(const uint8_t* p) { return static_cast<uint64_t>(u32(p)) | (static_cast<uint64_t>(u32(p + 4)) << 32); }

[[noreturn]] void bad(const std::string& where, const std::string& what) { fail(ErrorKind::kBundle, where + ": " + what); }

// The sizes and offset of one entry after applying its ZIP64 extra field.
struct ZipSizes {
  uint64_t compressed = 0, uncompressed = 0, offset = 0;
};

// Replaces the 0xFFFFFFFF fields of `s` from the ZIP64 extra field in extra[0..len).
void apply_zip64(const uint8_t* extra, size_t len, bool want_offset, ZipSizes& s, const std::string& where) {
  const bool need_u = s.uncompressed == kMax32, need_c = s.compressed == kMax32, need_o = want_offset && s.offset == kMax32;
  if (!need_u && !need_c && !need_o) return;
  for (size_t pos = 0; pos + 4 <= len;) {
    const uint16_t id = u16(extra + pos), size = u16(extra + pos + 2);
    if (pos + 4 + size > len) bad(where, "extra field runs past its header");
    if (id == 1) {
      const uint8_t* p = extra + pos + 4;
      size_t used = 0;
      auto take = [&](uint64_t& field) {
        if (used + 8 > size) bad(where, "ZIP64 extra field too short");
        field = u64(p + used);
        used += 8;
      };
      if (need_u) take(s.uncompressed);
      if (need_c) take(s.compressed);
      if (need_o) take(s.offset);
      return;
    }
    pos += 4 + size;
  }
  bad(where, "sizes of 0xFFFFFFFF but no ZIP64 extra field");
}

struct Parser {  // a tiny reader of the Python dict literal in a .npy header
  const std::string& s;
  const std::string& where;
  size_t i = 0;
  void ws() {
    while (i < s.size() && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r')) ++i;
  }
  bool eat(char c) {
    ws();
    if (i < s.size() && s[i] == c) {
      ++i;
      return true;
    }
    return false;
  }
  void expect(char c) {
    if (!eat(c)) bad(where, std::string("malformed .npy header (expected '") + c + "'): " + s);
  }
  std::string str() {
    ws();
    if (i >= s.size() || (s[i] != '\'' && s[i] != '"')) bad(where, "malformed .npy header (expected a string): " + s);
    const char q = s[i++];
    const size_t end = s.find(q, i);
    if (end == std::string::npos) bad(where, "malformed .npy header (unterminated string): " + s);
    std::string out = s.substr(i, end - i);
    i = end + 1;
    return out;
  }
  bool word(const char* w) {
    ws();
    const size_t n = std::strlen(w);
    if (s.compare(i, n, w) == 0) {
      i += n;
      return true;
    }
    return false;
  }
  int64_t integer() {
    ws();
    const size_t start = i;
    int64_t v = 0;
    while (i < s.size() && s[i] >= '0' && s[i] <= '9') {
      if (v > (std::numeric_limits<int64_t>::max() - 9) / 10) bad(where, ".npy shape entry too large");
      v = v * 10 + (s[i++] - '0');
    }
    if (i == start) bad(where, "malformed .npy header (expected a non-negative integer): " + s);
    if (i < s.size() && s[i] == 'L') ++i;  // Python 2 longs
    return v;
  }
};

}  // namespace

uint32_t crc32(const uint8_t* data, size_t size, uint32_t crc) {
  static const auto table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  crc = ~crc;
  for (size_t i = 0; i < size; ++i) crc = table[(crc ^ data[i]) & 0xFF] ^ (crc >> 8);
  return ~crc;
}

int64_t NpyArray::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::vector<int64_t> NpyArray::to_int64(const std::string& where) const {
  if (kind != 'i' && kind != 'u' && kind != 'b') bad(where, "expected integers, got dtype " + descr);
  const size_t n = static_cast<size_t>(numel());
  std::vector<int64_t> out(n);
  for (size_t k = 0; k < n; ++k) {
    const uint8_t* p = data.data() + k * itemsize;
    uint64_t v = 0;
    for (size_t b = 0; b < itemsize; ++b) v |= static_cast<uint64_t>(p[b]) << (8 * b);
    if (kind == 'i' && itemsize < 8 && (v >> (8 * itemsize - 1)) & 1) v |= ~uint64_t(0) << (8 * itemsize);  // sign-extend
    if (kind == 'u' && v > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
      bad(where, "value " + std::to_string(v) + " does not fit int64");
    out[k] = static_cast<int64_t>(v);
  }
  return out;
}

uint64_t NpyArray::scalar_uint64(const std::string& where) const {
  if (!shape.empty()) bad(where, "expected a scalar");
  if (kind == 'u' && itemsize == 8) return u64(data.data());
  const int64_t v = to_int64(where)[0];
  if (v < 0) bad(where, "expected a non-negative integer, got " + std::to_string(v));
  return static_cast<uint64_t>(v);
}

double NpyArray::scalar_double(const std::string& where) const {
  if (!shape.empty()) bad(where, "expected a scalar");
  if (kind == 'f') {
    if (itemsize == 8) {
      const uint64_t bits = u64(data.data());
      double d;
      std::memcpy(&d, &bits, 8);
      return d;
    }
    const uint32_t bits = u32(data.data());
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
  }
  return static_cast<double>(to_int64(where)[0]);
}

std::string NpyArray::scalar_string(const std::string& where) const {
  if (!shape.empty()) bad(where, "expected a scalar");
  if (kind != 'U') bad(where, "expected a unicode string, got dtype " + descr);
  std::string out;
  for (size_t k = 0; k + 4 <= data.size(); k += 4) {
    const uint32_t c = u32(data.data() + k);
    if (c == 0) break;  // numpy pads short strings with NULs
    if (c >= 0x110000) bad(where, "invalid code point in a unicode string");
    append_utf8(out, c);
  }
  return out;
}

NpyArray parse_npy(const uint8_t* data, size_t size, const std::string& where) {
  static const uint8_t magic[6] = {0x93, 'N', 'U', 'M', 'P', 'Y'};
  if (size < 10 || std::memcmp(data, magic, 6) != 0) bad(where, "not a .npy array (no \\x93NUMPY magic)");
  const int major = data[6];
  if (major < 1 || major > 3) bad(where, ".npy format version " + std::to_string(major) + " (this reader knows 1, 2, 3)");
  const size_t prefix = major == 1 ? 10 : 12;
  if (size < prefix) bad(where, "truncated .npy header");
  const size_t header_len = major == 1 ? u16(data + 8) : u32(data + 8);
  if (header_len > size - prefix) bad(where, "truncated .npy header");
  const std::string header(reinterpret_cast<const char*>(data + prefix), header_len);

  NpyArray a;
  bool has_descr = false, has_order = false, has_shape = false, fortran = false;
  Parser p{header, where};
  p.expect('{');
  while (!p.eat('}')) {
    const std::string key = p.str();
    p.expect(':');
    if (key == "descr") {
      p.ws();
      if (p.i < header.size() && header[p.i] == '[') bad(where, "structured dtypes are not supported: " + header);
      a.descr = p.str();
      has_descr = true;
    } else if (key == "fortran_order") {
      if (p.word("True")) fortran = true;
      else if (p.word("False")) fortran = false;
      else bad(where, "malformed .npy header (fortran_order): " + header);
      has_order = true;
    } else if (key == "shape") {
      p.expect('(');
      while (!p.eat(')')) {
        a.shape.push_back(p.integer());
        if (!p.eat(',')) {
          p.expect(')');
          break;
        }
      }
      has_shape = true;
    } else {
      bad(where, "unexpected key '" + key + "' in the .npy header");
    }
    if (!p.eat(',')) {
      p.expect('}');
      break;
    }
  }
  p.ws();
  if (p.i != header.size() || header.empty() || header.back() != '\n')
    bad(where, "malformed .npy header (text after the dictionary or no final newline)");
  if (!has_descr || !has_order || !has_shape) bad(where, ".npy header lacks descr, fortran_order or shape: " + header);

  // dtype: byte order, kind, item size.
  const std::string& d = a.descr;
  if (d.size() < 3) bad(where, "unsupported dtype '" + d + "'");
  if (d[0] == '>') bad(where, "big-endian dtype '" + d + "' is not supported");
  if (d[0] != '<' && d[0] != '|') bad(where, "unsupported dtype '" + d + "' (byte order must be '<' or '|')");
  a.kind = d[1];
  size_t n = 0;
  for (size_t k = 2; k < d.size(); ++k) {
    if (d[k] < '0' || d[k] > '9' || n > 1000000) bad(where, "unsupported dtype '" + d + "'");
    n = n * 10 + static_cast<size_t>(d[k] - '0');
  }
  bool ok = false;
  switch (a.kind) {
    case 'b': ok = n == 1; a.itemsize = 1; break;
    case 'i': case 'u': ok = n == 1 || n == 2 || n == 4 || n == 8; a.itemsize = n; break;
    case 'f': ok = n == 4 || n == 8; a.itemsize = n; break;
    case 'U': ok = n >= 1; a.itemsize = 4 * n; break;
    default: break;
  }
  if (!ok) bad(where, "unsupported dtype '" + d + "'");
  if (d[0] == '|' && a.itemsize != 1) bad(where, "dtype '" + d + "' needs a byte order");
  if (fortran && a.shape.size() >= 2) bad(where, "Fortran-order arrays are not supported (write C order)");

  uint64_t numel = 1;
  for (int64_t dim : a.shape) {
    if (dim != 0 && numel > std::numeric_limits<uint64_t>::max() / static_cast<uint64_t>(dim) / a.itemsize)
      bad(where, "shape too large");
    numel *= static_cast<uint64_t>(dim);
  }
  const size_t body = size - prefix - header_len;
  if (numel * a.itemsize != body)
    bad(where, "array data is " + std::to_string(body) + " bytes, dtype " + d + " and shape need " +
                   std::to_string(numel * a.itemsize) + (body < numel * a.itemsize ? " (truncated)" : ""));
  a.data.assign(data + prefix + header_len, data + size);
  return a;
}

std::map<std::string, NpyArray> parse_npz(const uint8_t* data, size_t size, const std::string& name) {
  // End of central directory: the last "PK\5\6" whose comment ends exactly at the end of the file.
  if (size < 22) bad(name, "not a ZIP archive or truncated (" + std::to_string(size) + " bytes)");
  size_t end = std::string::npos;
  const size_t lowest = size >= 22 + 65535 ? size - 22 - 65535 : 0;
  for (size_t pos = size - 22 + 1; pos-- > lowest;) {
    if (u32(data + pos) == kEndSig && pos + 22 + u16(data + pos + 20) == size) {
      end = pos;
      break;
    }
  }
  if (end == std::string::npos) bad(name, "not a ZIP archive or truncated (no end-of-central-directory record)");
  const uint8_t* e = data + end;
  if (u16(e + 4) != 0 || u16(e + 6) != 0) bad(name, "multi-disk ZIP archives are not supported");
  uint64_t entries = u16(e + 10), cd_size = u32(e + 12), cd_offset = u32(e + 16);
  size_t cd_limit = end;  // the central directory ends before this
  if (end >= 20 && u32(data + end - 20) == kZip64LocatorSig) {
    const uint64_t z = u64(data + end - 20 + 8);
    if (z > end - 20 || end - 20 - z < 56 || u32(data + z) != kZip64EndSig)
      bad(name, "damaged ZIP64 end-of-central-directory record");
    entries = u64(data + z + 32);
    cd_size = u64(data + z + 40);
    cd_offset = u64(data + z + 48);
    cd_limit = static_cast<size_t>(z);
  } else if (entries == 0xFFFF || cd_size == kMax32 || cd_offset == kMax32) {
    bad(name, "ZIP64 archive without its end-of-central-directory locator (truncated?)");
  }
  if (cd_offset > cd_limit || cd_size != cd_limit - cd_offset)
    bad(name, "central directory at " + std::to_string(cd_offset) + " (+" + std::to_string(cd_size) +
                  " bytes) does not end where the end record starts (truncated or damaged)");

  std::map<std::string, NpyArray> out;
  size_t pos = static_cast<size_t>(cd_offset);
  for (uint64_t k = 0; k < entries; ++k) {
    if (pos + 46 > cd_limit || u32(data + pos) != kCentralSig)
      bad(name, "central directory entry " + std::to_string(k) + " is damaged");
    const uint8_t* c = data + pos;
    const uint16_t flags = u16(c + 8), method = u16(c + 10);
    const uint32_t crc = u32(c + 16);
    const size_t name_len = u16(c + 28), extra_len = u16(c + 30), comment_len = u16(c + 32);
    if (pos + 46 + name_len + extra_len + comment_len > cd_limit)
      bad(name, "central directory entry " + std::to_string(k) + " runs past the directory");
    const std::string entry(reinterpret_cast<const char*>(c + 46), name_len);
    const std::string where = name + " entry '" + entry + "'";
    ZipSizes cs{u32(c + 20), u32(c + 24), u32(c + 42)};
    apply_zip64(c + 46 + name_len, extra_len, true, cs, where);
    pos += 46 + name_len + extra_len + comment_len;

    if (flags & 0x1) bad(where, "is encrypted");
    if (method != 0)
      bad(where, "is compressed (ZIP method " + std::to_string(method) + (method == 8 ? ", deflate" : "") +
                     "); this reader takes stored entries only, as np.savez writes them (not np.savez_compressed)");
    if (cs.compressed != cs.uncompressed)
      bad(where, "stored entry with compressed size " + std::to_string(cs.compressed) + " != size " +
                     std::to_string(cs.uncompressed));

    // The local header must agree with the central directory.
    const uint64_t lo = cs.offset;
    if (lo + 30 > cd_offset || u32(data + lo) != kLocalSig) bad(where, "local header missing or damaged");
    const uint8_t* l = data + lo;
    const size_t lname = u16(l + 26), lextra = u16(l + 28);
    if (lo + 30 + lname + lextra > cd_offset) bad(where, "local header runs past the data region");
    if (lname != name_len || std::memcmp(l + 30, c + 46, name_len) != 0)
      bad(where, "local header names '" + std::string(reinterpret_cast<const char*>(l + 30), lname) + "'");
    if (u16(l + 8) != method) bad(where, "local header and central directory disagree on the method");
    if (!(u16(l + 6) & 0x8)) {  // sizes and CRC in the local header (no data descriptor)
      ZipSizes ls{u32(l + 18), u32(l + 22), 0};
      apply_zip64(l + 30 + lname, lextra, false, ls, where);
      if (u32(l + 14) != crc || ls.compressed != cs.compressed || ls.uncompressed != cs.uncompressed)
        bad(where, "local header and central directory disagree on CRC-32 or sizes");
    }
    const uint64_t begin = lo + 30 + lname + lextra;
    if (cs.compressed > cd_offset - begin)
      bad(where, "data (" + std::to_string(cs.compressed) + " bytes at " + std::to_string(begin) +
                     ") runs past the data region (truncated?)");
    const uint8_t* body = data + begin;
    const size_t body_size = static_cast<size_t>(cs.compressed);
    const uint32_t actual = crc32(body, body_size);
    if (actual != crc) bad(where, "CRC-32 mismatch (corrupt data)");

    if (entry.size() < 4 || entry.compare(entry.size() - 4, 4, ".npy") != 0) bad(where, "is not a .npy array");
    const std::string key = entry.substr(0, entry.size() - 4);
    if (out.count(key)) bad(where, "appears twice");
    out.emplace(key, parse_npy(body, body_size, where));
  }
  if (pos != cd_limit) bad(name, "central directory holds more than its " + std::to_string(entries) + " entries");
  return out;
}

std::map<std::string, NpyArray> read_npz(const std::string& path) {
  const std::vector<uint8_t> bytes = read_file(path);
  return parse_npz(bytes.data(), bytes.size(), path);
}

}  // namespace lpd
