// Bundle loading: a valid tiny bundle opens; every kind of damage (truncation, flipped byte,
// wrong size, bad JSON, unsupported version, missing or mis-shaped tensor, bad dtype, offsets
// outside the file) is refused with Error(kBundle) before any compute.
#include <string>

#include "lpd/bundle.h"
#include "lpd/runtime.h"
#include "test_util.h"

static std::string g_dir;

static void restore() { write_tiny_bundle(g_dir); }

static void expect_bundle_error(const char* what) {
  CHECK(throws_kind(lpd::ErrorKind::kBundle, [] { lpd::open_bundle(g_dir); }, what));
  restore();
}

static void replace_in_manifest(const std::string& from, const std::string& to) {
  auto bytes = read_bytes(g_dir + "/manifest.json");
  std::string s(bytes.begin(), bytes.end());
  const size_t at = s.find(from);
  CHECK(at != std::string::npos);
  if (at != std::string::npos) s.replace(at, from.size(), to);
  write_bytes(g_dir + "/manifest.json", std::vector<uint8_t>(s.begin(), s.end()));
}

// Rewrites weights.safetensors with a new header (keeping the data) and fixes the manifest's
// size and digest, so only the header is wrong.
static void rewrite_header(const std::string& from, const std::string& to) {
  auto file = read_bytes(g_dir + "/weights.safetensors");
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | file[size_t(i)];
  std::string header(file.begin() + 8, file.begin() + 8 + long(n));
  const size_t at = header.find(from);
  CHECK(at != std::string::npos);
  header.replace(at, from.size(), to);
  std::vector<uint8_t> out(8);
  for (int i = 0; i < 8; ++i) out[size_t(i)] = uint8_t(header.size() >> (8 * i));
  out.insert(out.end(), header.begin(), header.end());
  out.insert(out.end(), file.begin() + 8 + long(n), file.end());
  write_bytes(g_dir + "/weights.safetensors", out);
  auto m = read_bytes(g_dir + "/manifest.json");
  std::string s(m.begin(), m.end());
  const size_t size_at = s.find("\"size\": ") + 8;
  s.replace(size_at, s.find(',', size_at) - size_at, std::to_string(out.size()));
  const size_t sha_at = s.find("\"sha256\": \"") + 11;
  s.replace(sha_at, 64, lpd::sha256_hex(out.data(), out.size()));
  write_bytes(g_dir + "/manifest.json", std::vector<uint8_t>(s.begin(), s.end()));
}

int main() {
  g_dir = write_tiny_bundle(temp_dir("bundle"));
  {
    const lpd::Bundle b = lpd::open_bundle(g_dir);
    CHECK(b.lpd.dim == 32 && b.lpd.num_tokens == 16 && b.lpd.grid() == 4 && b.vq.ch_mult.size() == 2);
    CHECK(b.weights.info("head.weight").shape == (std::vector<int64_t>{29, 32}));
    CHECK(throws_kind(lpd::ErrorKind::kBundle, [&] { b.weights.to_float("head.weight", {32, 29}); }, "shape"));
    CHECK(throws_kind(lpd::ErrorKind::kBundle, [&] { b.weights.to_float("nope", {1}); }, "missing tensor"));
  }

  // Truncated weights: the manifest's size catches it; without it the safetensors offsets do.
  auto w = read_bytes(g_dir + "/weights.safetensors");
  write_bytes(g_dir + "/weights.safetensors", std::vector<uint8_t>(w.begin(), w.end() - 100));
  expect_bundle_error("truncated weights");
  // One flipped byte: same size, sha256 differs.
  w[w.size() / 2] ^= 0x40;
  write_bytes(g_dir + "/weights.safetensors", w);
  expect_bundle_error("flipped byte");
  // ... and with hash verification off the same file loads (the digest was the only check).
  w[w.size() / 2] ^= 0x40;
  CHECK(lpd::open_bundle(g_dir, false).lpd.depth == 2);
  // Missing files.
  std::remove((g_dir + "/weights.safetensors").c_str());
  expect_bundle_error("missing weights");
  std::remove((g_dir + "/manifest.json").c_str());
  expect_bundle_error("missing manifest");
  // Manifest damage.
  replace_in_manifest("\"format_version\": 1", "\"format_version\": 2");
  expect_bundle_error("newer format");
  replace_in_manifest("{", "[");
  expect_bundle_error("bad JSON");
  replace_in_manifest("\"dim\": 32", "\"dim\": 33");
  expect_bundle_error("dim not divisible by heads");
  replace_in_manifest("\"dtype\": \"fp32\"", "\"dtype\": \"int8\"");
  expect_bundle_error("dtype");
  replace_in_manifest("\"weights.safetensors\"", "\"../weights.safetensors\"");
  expect_bundle_error("path outside the bundle");
  // Header damage (digest kept consistent, so the safetensors checks are what fails).
  rewrite_header("\"dtype\":\"F32\"", "\"dtype\":\"I64\"");
  expect_bundle_error("unsupported tensor dtype");
  rewrite_header("\"shape\":[29, 32]", "\"shape\":[29, 33]");
  expect_bundle_error("size does not match shape");
  // A missing tensor only shows when the model is built from the bundle.
  rewrite_header("\"final_norm.bias\"", "\"final_norm.bias_renamed\"");
  CHECK(throws_kind(lpd::ErrorKind::kBundle, [] { lpd::Engine e(g_dir, lpd::EngineOptions()); }, "missing tensor"));
  restore();
  CHECK(lpd::Engine(g_dir, lpd::EngineOptions()).config().vocab_size == 29);
  return finish("test_bundle");
}
