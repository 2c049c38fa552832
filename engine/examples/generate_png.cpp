// lpd_generate_png: open a bundle, generate one image per class label, write PNG files.
//
//   lpd_generate_png BUNDLE_DIR OUT_PREFIX LABEL [LABEL ...] [--steps S] [--cfg W] [--seed N] [--cuda]
//       -> OUT_PREFIX0.png, OUT_PREFIX1.png, ...
//
// Uses only the C API (lpd/engine.h), and chooses what the Python Generator chooses, so the
// PNGs hold the pixels of Generator(bundle).run(labels, steps=S, seed=N): the bundle's schedule
// for S steps (S defaults to 20; the bundle must have it), image i's precomputed order picked by
// (seed, i), guidance from the manifest's default_cfg for S unless --cfg is given.
// --cuda runs the engine on the GPU (LPD_DEVICE_CUDA; bf16, so the pixels are close to the
// CPU's, not equal). The PNG writer below is the smallest valid one: 8-bit RGB, filter 0, zlib
// "stored" blocks, CRC-32 and Adler-32 by hand.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cctype>
#include <cstring>
#include <string>
#include <vector>

#include "lpd/engine.h"

namespace {

uint32_t crc32(const uint8_t* data, size_t n, uint32_t crc = 0) {
  static uint32_t table[256];
  static bool ready = false;
  if (!ready) {
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      table[i] = c;
    }
    ready = true;
  }
  crc = ~crc;
  for (size_t i = 0; i < n; ++i) crc = table[(crc ^ data[i]) & 0xFF] ^ (crc >> 8);
  return ~crc;
}

void put32(std::vector<uint8_t>& out, uint32_t v) {
  for (int s = 24; s >= 0; s -= 8) out.push_back(static_cast<uint8_t>(v >> s));
}

void chunk(std::vector<uint8_t>& png, const char* type, const std::vector<uint8_t>& data) {
  put32(png, static_cast<uint32_t>(data.size()));
  std::vector<uint8_t> body(type, type + 4);
  body.insert(body.end(), data.begin(), data.end());
  png.insert(png.end(), body.begin(), body.end());
  put32(png, crc32(body.data(), body.size()));
}

bool write_png(const std::string& path, const uint8_t* rgb, int64_t width, int64_t height) {
  std::vector<uint8_t> raw;  // each row: filter byte 0, then RGB
  for (int64_t y = 0; y < height; ++y) {
    raw.push_back(0);
    raw.insert(raw.end(), rgb + y * width * 3, rgb + (y + 1) * width * 3);
  }
  std::vector<uint8_t> z = {0x78, 0x01};  // zlib header, no compression
  for (size_t pos = 0; pos < raw.size() || pos == 0;) {
    const size_t len = raw.size() - pos < 65535 ? raw.size() - pos : 65535;
    const bool last = pos + len == raw.size();
    z.push_back(last ? 1 : 0);
    z.push_back(static_cast<uint8_t>(len));
    z.push_back(static_cast<uint8_t>(len >> 8));
    z.push_back(static_cast<uint8_t>(~len));
    z.push_back(static_cast<uint8_t>(~len >> 8));
    z.insert(z.end(), raw.begin() + pos, raw.begin() + pos + len);
    pos += len;
    if (last) break;
  }
  uint32_t a = 1, b = 0;
  for (uint8_t byte : raw) {
    a = (a + byte) % 65521;
    b = (b + a) % 65521;
  }
  put32(z, (b << 16) | a);
  std::vector<uint8_t> png = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
  std::vector<uint8_t> ihdr;
  put32(ihdr, static_cast<uint32_t>(width));
  put32(ihdr, static_cast<uint32_t>(height));
  ihdr.insert(ihdr.end(), {8, 2, 0, 0, 0});  // 8-bit, RGB, deflate, filter 0, no interlace
  chunk(png, "IHDR", ihdr);
  chunk(png, "IDAT", z);
  chunk(png, "IEND", {});
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) return false;
  const bool ok = std::fwrite(png.data(), 1, png.size(), f) == png.size();
  return std::fclose(f) == 0 && ok;
}

int usage() {
  std::fprintf(stderr,
               "usage: lpd_generate_png BUNDLE_DIR OUT_PREFIX LABEL [LABEL ...] [--steps S] [--cfg W] [--seed N] "
               "[--cuda]\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 4) return usage();
  const std::string bundle = argv[1], prefix = argv[2];
  std::vector<int64_t> labels;
  int64_t steps = 20;
  double cfg = 1.0;
  bool cfg_given = false;  // else the bundle's default for `steps`
  uint64_t seed = 0;
  int32_t device = LPD_DEVICE_CPU;
  for (int i = 3; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--cuda") {
      device = LPD_DEVICE_CUDA;
    } else if ((a == "--steps" || a == "--cfg" || a == "--seed") && i + 1 < argc) {
      const char* v = argv[++i];
      if (a == "--steps") {
        steps = std::atoll(v);
      } else if (a == "--cfg") {
        cfg = std::atof(v);
        cfg_given = true;
      } else {
        seed = std::strtoull(v, nullptr, 10);
      }
    } else if (!a.empty() && (std::isdigit(static_cast<unsigned char>(a[0])))) {
      labels.push_back(std::atoll(a.c_str()));
    } else {
      return usage();
    }
  }
  if (labels.empty()) return usage();

  lpd_engine* engine = nullptr;
  lpd_engine_params params = lpd_engine_default_params();
  params.device = device;
  if (lpd_engine_init(bundle.c_str(), &params, &engine) < 0) {
    std::fprintf(stderr, "error: %s\n", lpd_last_error());
    return 1;
  }
  lpd_request_params req;
  if (lpd_engine_request_defaults(engine, steps, &req) < 0) {
    std::fprintf(stderr, "error: %s\n", lpd_last_error());
    lpd_engine_free(engine);
    return 1;
  }
  const size_t batch = labels.size();
  req.labels = labels.data();
  req.num_labels = batch;
  if (cfg_given) req.cfg = cfg;
  req.seed = seed;
  int64_t id = 0;
  int64_t height = 0, width = 0;
  std::vector<uint8_t> pixels;
  lpd_status st = lpd_engine_submit_steps(engine, &req, steps, &id);
  if (st >= 0) st = lpd_engine_wait(engine, id);
  if (st >= 0) st = lpd_engine_get_result_shape(engine, id, nullptr, nullptr, &height, &width);
  if (st >= 0) {
    pixels.resize(batch * static_cast<size_t>(height * width * 3));
    st = lpd_engine_get_pixels(engine, id, pixels.data(), pixels.size());
  }
  if (st < 0) {
    std::fprintf(stderr, "error: %s\n", lpd_last_error());
    lpd_engine_free(engine);
    return 1;
  }
  for (size_t i = 0; i < batch; ++i) {
    const std::string path = prefix + std::to_string(i) + ".png";
    if (!write_png(path, pixels.data() + i * height * width * 3, width, height)) {
      std::fprintf(stderr, "error: cannot write %s\n", path.c_str());
      lpd_engine_free(engine);
      return 1;
    }
    std::printf("%s  label %lld  %lldx%lld\n", path.c_str(), static_cast<long long>(labels[i]),
                static_cast<long long>(width), static_cast<long long>(height));
  }
  lpd_engine_release(engine, id);
  lpd_engine_free(engine);
  return 0;
}
