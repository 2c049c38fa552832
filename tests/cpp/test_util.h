// Shared helpers of the runtime's C++ tests: a CHECK macro that counts failures, an
// expect-throw helper for typed lpd::Error kinds, and write_tiny_bundle(), which writes a
// complete random-weight bundle (manifest.json + weights.safetensors, our tensor names) for a
// tiny model, so the CTest suite needs no Python.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <string>
#include <sys/stat.h>
#include <unistd.h>
#include <utility>
#include <vector>

#include "lpd/errors.h"
#include "lpd/sha256.h"

static int g_failures = 0;
#define CHECK(cond)                                                        \
  do {                                                                     \
    if (!(cond)) {                                                         \
      std::printf("FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);          \
      ++g_failures;                                                        \
    }                                                                      \
  } while (0)

inline bool throws_kind(lpd::ErrorKind kind, const std::function<void()>& f, const char* what = "") {
  try {
    f();
  } catch (const lpd::Error& e) {
    if (e.kind == kind) return true;
    std::printf("  %s: wrong kind %d: %s\n", what, static_cast<int>(e.kind), e.what());
    return false;
  } catch (const std::exception& e) {
    std::printf("  %s: unexpected exception: %s\n", what, e.what());
    return false;
  }
  std::printf("  %s: no exception\n", what);
  return false;
}

inline int finish(const char* name) {
  std::printf("%s: %s\n", name, g_failures ? "FAILED" : "ok");
  return g_failures ? EXIT_FAILURE : EXIT_SUCCESS;
}

struct TinyModel {
  int64_t dim = 32, depth = 2, heads = 2, vocab = 29, classes = 10, tokens = 16, hidden = 64;
  int64_t codebook = 29, codebook_dim = 8, z = 32, ch = 32, res_blocks = 1;
  std::vector<int64_t> ch_mult = {1, 2};
};

struct TensorSpec {
  std::string name;
  std::vector<int64_t> shape;
  float mean, std;
};

inline std::vector<TensorSpec> tiny_tensors(const TinyModel& m) {
  std::vector<TensorSpec> t;
  auto norm = [&](const std::string& p, int64_t c) {
    t.push_back({p + ".weight", {c}, 1.0f, 0.1f});
    t.push_back({p + ".bias", {c}, 0.0f, 0.1f});
  };
  auto lin = [&](const std::string& p, int64_t o, int64_t i, bool bias) {
    t.push_back({p + ".weight", {o, i}, 0.0f, 1.0f / std::sqrt(float(i))});
    if (bias) t.push_back({p + ".bias", {o}, 0.0f, 0.02f});
  };
  auto conv = [&](const std::string& p, int64_t o, int64_t i, int64_t k) {
    t.push_back({p + ".weight", {o, i, k, k}, 0.0f, 1.0f / std::sqrt(float(i * k * k))});
    t.push_back({p + ".bias", {o}, 0.0f, 0.02f});
  };
  auto resnet = [&](const std::string& p, int64_t i, int64_t o) {
    norm(p + ".norm1", i);
    conv(p + ".conv1", o, i, 3);
    norm(p + ".norm2", o);
    conv(p + ".conv2", o, o, 3);
    if (i != o) conv(p + ".nin_shortcut", o, i, 1);
  };
  auto attn = [&](const std::string& p, int64_t c) {
    norm(p + ".norm", c);
    for (const char* s : {".q", ".k", ".v", ".proj_out"}) conv(p + s, c, c, 1);
  };
  const int64_t d = m.dim;
  t.push_back({"embed.table", {m.vocab + m.classes + 2, d}, 0.0f, 0.02f});
  t.push_back({"embed.pos", {m.tokens + 1, d}, 0.0f, 0.02f});
  norm("embed.norm", d);
  for (int64_t i = 0; i < m.depth; ++i) {
    const std::string p = "layers." + std::to_string(i);
    norm(p + ".attn_norm", d);
    lin(p + ".qkv", 3 * d, d, true);
    lin(p + ".proj", d, d, true);
    norm(p + ".mlp_norm", d);
    lin(p + ".fc1", m.hidden, d, true);
    lin(p + ".fc2", d, m.hidden, true);
  }
  norm("final_norm", d);
  lin("head", m.vocab, d, false);
  t.push_back({"vq.codebook", {m.codebook, m.codebook_dim}, 0.0f, 1.0f});
  conv("vq.post_quant_conv", m.z, m.codebook_dim, 1);
  const int64_t levels = static_cast<int64_t>(m.ch_mult.size());
  int64_t c_in = m.ch * m.ch_mult.back();
  conv("vq.decoder.conv_in", c_in, m.z, 3);
  resnet("vq.decoder.mid.0", c_in, c_in);
  attn("vq.decoder.mid.1", c_in);
  resnet("vq.decoder.mid.2", c_in, c_in);
  for (int64_t i = 0; i < levels; ++i) {
    const int64_t w = m.ch * m.ch_mult[static_cast<size_t>(levels - 1 - i)];
    const std::string p = "vq.decoder.conv_blocks." + std::to_string(i);
    for (int64_t r = 0; r < m.res_blocks; ++r) {
      resnet(p + ".res." + std::to_string(r), c_in, w);
      c_in = w;
      if (i == 0) attn(p + ".attn." + std::to_string(r), w);
    }
    if (i != levels - 1) conv(p + ".upsample.conv", w, w, 3);
  }
  norm("vq.decoder.norm_out", c_in);
  conv("vq.decoder.conv_out", 3, c_in, 3);
  return t;
}

inline std::string json_list(const std::vector<int64_t>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
  return s + "]";
}

inline void write_bytes(const std::string& path, const std::vector<uint8_t>& data) {
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(data.data()), static_cast<std::streamsize>(data.size()));
}

inline std::vector<uint8_t> read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::vector<uint8_t>((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

// Writes dir/weights.safetensors and dir/manifest.json; returns dir.
inline std::string write_tiny_bundle(const std::string& dir, const TinyModel& m = TinyModel(), uint64_t seed = 1) {
  mkdir(dir.c_str(), 0755);
  std::vector<TensorSpec> specs = tiny_tensors(m);
  std::string header = "{";
  std::vector<uint8_t> data;
  uint64_t state = seed * 0x9E3779B97F4A7C15ull + 1;
  auto gauss = [&]() {  // Box-Muller over a 64-bit LCG: deterministic everywhere
    auto uni = [&]() {
      state = state * 6364136223846793005ull + 1442695040888963407ull;
      return (static_cast<double>(state >> 11) + 0.5) / 9007199254740992.0;
    };
    const double u1 = uni(), u2 = uni();
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
  };
  for (size_t i = 0; i < specs.size(); ++i) {
    const TensorSpec& s = specs[i];
    int64_t n = 1;
    for (int64_t d : s.shape) n *= d;
    const size_t begin = data.size();
    for (int64_t k = 0; k < n; ++k) {
      const float v = s.mean + s.std * static_cast<float>(gauss());
      const uint8_t* b = reinterpret_cast<const uint8_t*>(&v);
      data.insert(data.end(), b, b + 4);
    }
    header += (i ? "," : "") + std::string("\"") + s.name + "\":{\"dtype\":\"F32\",\"shape\":" + json_list(s.shape) +
              ",\"data_offsets\":[" + std::to_string(begin) + "," + std::to_string(data.size()) + "]}";
  }
  header += "}";
  while ((header.size() + 8) % 8) header += ' ';
  std::vector<uint8_t> file(8);
  for (int i = 0; i < 8; ++i) file[static_cast<size_t>(i)] = static_cast<uint8_t>(header.size() >> (8 * i));
  file.insert(file.end(), header.begin(), header.end());
  file.insert(file.end(), data.begin(), data.end());
  write_bytes(dir + "/weights.safetensors", file);
  const std::string manifest =
      "{\n \"format_version\": 1, \"name\": \"tiny\", \"dtype\": \"fp32\", \"image_size\": " +
      std::to_string(4 * (int64_t(1) << (m.ch_mult.size() - 1))) +
      ",\n \"config\": {\"dim\": " + std::to_string(m.dim) + ", \"depth\": " + std::to_string(m.depth) +
      ", \"heads\": " + std::to_string(m.heads) + ", \"vocab_size\": " + std::to_string(m.vocab) +
      ", \"num_classes\": " + std::to_string(m.classes) + ", \"num_tokens\": " + std::to_string(m.tokens) +
      ", \"mlp_hidden\": " + std::to_string(m.hidden) + "},\n \"vq_config\": {\"codebook_size\": " +
      std::to_string(m.codebook) + ", \"codebook_dim\": " + std::to_string(m.codebook_dim) +
      ", \"z_channels\": " + std::to_string(m.z) + ", \"ch\": " + std::to_string(m.ch) + ", \"ch_mult\": " +
      json_list(m.ch_mult) + ", \"decoder_res_blocks\": " + std::to_string(m.res_blocks) +
      ", \"encoder_res_blocks\": 1, \"has_encoder\": false},\n \"default_cfg\": {}, \"schedules\": {}, \"graphs\": {},\n"
      " \"files\": {\"weights.safetensors\": {\"size\": " + std::to_string(file.size()) + ", \"sha256\": \"" +
      lpd::sha256_hex(file.data(), file.size()) + "\"}}\n}\n";
  std::ofstream(dir + "/manifest.json") << manifest;
  return dir;
}

inline std::string temp_dir(const std::string& name) {
  const char* base = std::getenv("TMPDIR");
  std::string dir = std::string(base ? base : "/tmp") + "/lpd_test_" + name + "_" + std::to_string(::getpid());
  mkdir(dir.c_str(), 0755);
  return dir;
}
