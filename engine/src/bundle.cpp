// Bundle loader: manifest, file digests, safetensors parsing and dtype conversion (lpd/bundle.h).
#include "lpd/bundle.h"

#include <cmath>
#include <cstring>

#include "lpd/errors.h"
#include "lpd/read_file.h"
#include "lpd/sha256.h"

namespace lpd {
namespace {

size_t dtype_size(const std::string& dtype) {
  if (dtype == "F32") return 4;
  if (dtype == "BF16" || dtype == "F16") return 2;
  return 0;
}

float half_to_float(uint16_t h) {
  const uint32_t sign = (h >> 15) & 1, exp = (h >> 10) & 0x1F, mant = h & 0x3FF;
  float v;
  if (exp == 0) v = std::ldexp(static_cast<float>(mant), -24);
  else if (exp == 31) v = mant ? NAN : INFINITY;
  else v = std::ldexp(static_cast<float>(mant | 0x400), static_cast<int>(exp) - 25);
  return sign ? -v : v;
}

std::string shape_str(const std::vector<int64_t>& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

}  // namespace

int64_t TransformerConfig::grid() const {
  int64_t g = static_cast<int64_t>(std::llround(std::sqrt(static_cast<double>(num_tokens))));
  return g * g == num_tokens ? g : 0;
}

int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

SafeTensors SafeTensors::load(const std::string& path) { return parse(read_file(path), path); }

SafeTensors SafeTensors::parse(std::vector<uint8_t> bytes, const std::string& name) {
  SafeTensors st;
  st.name_ = name;
  if (bytes.size() < 8) fail(ErrorKind::kBundle, name + ": truncated safetensors file (no header size)");
  uint64_t header_size = 0;
  for (int i = 7; i >= 0; --i) header_size = (header_size << 8) | bytes[i];
  if (header_size > bytes.size() - 8) fail(ErrorKind::kBundle, name + ": truncated safetensors header");
  const Json header = Json::parse(std::string(reinterpret_cast<const char*>(bytes.data() + 8), header_size));
  st.data_start_ = 8 + header_size;
  const size_t data_size = bytes.size() - st.data_start_;
  for (const auto& [key, value] : header.object("safetensors header")) {
    if (key == "__metadata__") continue;
    TensorInfo info;
    info.dtype = value.at("dtype").string("dtype");
    for (const Json& d : value.at("shape").array("shape")) {
      const int64_t n = d.integer("shape entry");
      if (n < 0) fail(ErrorKind::kBundle, name + ": tensor " + key + " has a negative dimension");
      info.shape.push_back(n);
    }
    const auto& off = value.at("data_offsets").array("data_offsets");
    if (off.size() != 2) fail(ErrorKind::kBundle, name + ": tensor " + key + " needs two data_offsets");
    const int64_t begin = off[0].integer("offset"), end = off[1].integer("offset");
    const size_t esize = dtype_size(info.dtype);
    if (!esize) fail(ErrorKind::kBundle, name + ": tensor " + key + " has unsupported dtype " + info.dtype);
    if (begin < 0 || end < begin || static_cast<size_t>(end) > data_size)
      fail(ErrorKind::kBundle, name + ": tensor " + key + " lies outside the file (truncated?)");
    info.offset = static_cast<size_t>(begin);
    info.bytes = static_cast<size_t>(end - begin);
    if (info.bytes != static_cast<size_t>(info.numel()) * esize)
      fail(ErrorKind::kBundle, name + ": tensor " + key + " " + shape_str(info.shape) + " " + info.dtype + " needs " +
                                   std::to_string(info.numel() * esize) + " bytes, has " + std::to_string(info.bytes));
    st.tensors_[key] = info;
  }
  st.bytes_ = std::move(bytes);
  return st;
}

const TensorInfo& SafeTensors::info(const std::string& name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) fail(ErrorKind::kBundle, name_ + ": missing tensor " + name);
  return it->second;
}

std::vector<float> SafeTensors::to_float(const std::string& name, const std::vector<int64_t>& shape) const {
  const TensorInfo& t = info(name);
  if (t.shape != shape)
    fail(ErrorKind::kBundle, name_ + ": tensor " + name + " has shape " + shape_str(t.shape) + ", expected " +
                                 shape_str(shape));
  const uint8_t* p = bytes_.data() + data_start_ + t.offset;
  const size_t n = static_cast<size_t>(t.numel());
  std::vector<float> out(n);
  if (t.dtype == "F32") {
    std::memcpy(out.data(), p, n * 4);
  } else {
    for (size_t i = 0; i < n; ++i) {
      const uint16_t h = static_cast<uint16_t>(p[2 * i] | (p[2 * i + 1] << 8));
      if (t.dtype == "BF16") {
        const uint32_t bits = static_cast<uint32_t>(h) << 16;
        std::memcpy(&out[i], &bits, 4);
      } else {
        out[i] = half_to_float(h);
      }
    }
  }
  return out;
}

static int64_t int_field(const Json& j, const char* key) { return j.at(key).integer(key); }

TransformerConfig parse_transformer_config(const Json& j) {
  TransformerConfig c;
  c.dim = int_field(j, "dim");
  c.depth = int_field(j, "depth");
  c.heads = int_field(j, "heads");
  c.vocab_size = int_field(j, "vocab_size");
  c.num_classes = int_field(j, "num_classes");
  c.num_tokens = int_field(j, "num_tokens");
  c.mlp_hidden = int_field(j, "mlp_hidden");
  if (c.dim <= 0 || c.depth <= 0 || c.heads <= 0 || c.vocab_size <= 0 || c.num_classes <= 0 || c.num_tokens <= 0 ||
      c.mlp_hidden <= 0 || c.dim % c.heads || c.grid() == 0)
    fail(ErrorKind::kBundle, "manifest: invalid transformer config");
  return c;
}

VqConfig parse_vq_config(const Json& j) {
  VqConfig c;
  c.codebook_size = int_field(j, "codebook_size");
  c.codebook_dim = int_field(j, "codebook_dim");
  c.z_channels = int_field(j, "z_channels");
  c.ch = int_field(j, "ch");
  c.decoder_res_blocks = int_field(j, "decoder_res_blocks");
  for (const Json& m : j.at("ch_mult").array("ch_mult")) c.ch_mult.push_back(m.integer("ch_mult entry"));
  bool ok = c.codebook_size > 0 && c.codebook_dim > 0 && c.z_channels > 0 && c.ch > 0 && c.decoder_res_blocks > 0 &&
            !c.ch_mult.empty();
  for (int64_t m : c.ch_mult) ok = ok && m > 0 && (c.ch * m) % 32 == 0;
  if (!ok) fail(ErrorKind::kBundle, "manifest: invalid VQ config");
  return c;
}

Bundle open_bundle(const std::string& dir, bool verify_hashes) {
  Bundle b;
  b.dir = dir;
  const std::vector<uint8_t> text = read_file(dir + "/manifest.json");
  b.manifest = Json::parse(std::string(text.begin(), text.end()));
  if (!b.manifest.is_object()) fail(ErrorKind::kBundle, dir + "/manifest.json is not a JSON object");
  const int64_t version = b.manifest.at("format_version").integer("format_version");
  if (version != 1) fail(ErrorKind::kBundle, "unsupported bundle format_version " + std::to_string(version) +
                                                 " (this engine reads 1)");
  b.lpd = parse_transformer_config(b.manifest.at("config"));
  b.vq = parse_vq_config(b.manifest.at("vq_config"));
  const std::string& dtype = b.manifest.at("dtype").string("dtype");
  if (dtype != "fp32" && dtype != "bf16" && dtype != "fp16")
    fail(ErrorKind::kBundle, "manifest: unsupported dtype " + dtype);

  std::vector<uint8_t> weights;
  bool weights_seen = false;
  {
    for (const auto& [rel, entry] : b.manifest.at("files").object("files")) {
      if (rel.find("..") != std::string::npos || (!rel.empty() && rel[0] == '/'))
        fail(ErrorKind::kBundle, "manifest lists a file outside the bundle: " + rel);
      std::vector<uint8_t> data = read_file(dir + "/" + rel);
      if (const Json* size = entry.find("size"))
        if (static_cast<int64_t>(data.size()) != size->integer("size"))
          fail(ErrorKind::kBundle, rel + ": size " + std::to_string(data.size()) + " bytes, manifest says " +
                                       std::to_string(size->integer()) + " (truncated or replaced?)");
      if (const Json* digest = entry.find("sha256"); digest && verify_hashes)
        if (sha256_hex(data.data(), data.size()) != digest->string("sha256"))
          fail(ErrorKind::kBundle, rel + ": sha256 mismatch (corrupt file)");
      if (rel == "weights.safetensors") {
        weights = std::move(data);
        weights_seen = true;
      }
    }
  }
  if (!weights_seen) fail(ErrorKind::kBundle, dir + "/manifest.json lists no weights.safetensors");
  b.weights = SafeTensors::parse(std::move(weights), dir + "/weights.safetensors");
  return b;
}

}  // namespace lpd
