// The engine bundle, C++ side: manifest.json + weights.safetensors (docs/bundle.md).
//
// open_bundle() reads the manifest, checks the format version and the size and sha256 of every
// file it lists, parses the safetensors header (dtype, shape, offsets all checked against the
// file size) and returns the model configs plus the raw tensors. Every problem is an
// lpd::Error(kBundle) naming the file and the tensor, thrown before anything is allocated for
// compute. Tensors are converted to float32 on request (F32, BF16 and F16 are accepted).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "lpd/json.h"

namespace lpd {

struct TransformerConfig {
  int64_t dim = 0, depth = 0, heads = 0, vocab_size = 0, num_classes = 0, num_tokens = 0, mlp_hidden = 0;
  int64_t head_dim() const { return dim / heads; }
  int64_t grid() const;  // sqrt(num_tokens)
  int64_t table_rows() const { return vocab_size + num_classes + 2; }
  int64_t class_index(int64_t label) const { return vocab_size + label; }
  int64_t uncond_index() const { return vocab_size + num_classes; }
  int64_t mask_index() const { return vocab_size + num_classes + 1; }
};

struct VqConfig {
  int64_t codebook_size = 0, codebook_dim = 0, z_channels = 0, ch = 0, decoder_res_blocks = 0;
  std::vector<int64_t> ch_mult;
  int64_t downsample() const { return int64_t(1) << (ch_mult.size() - 1); }
};

struct TensorInfo {
  std::string dtype;           // "F32", "BF16", "F16"
  std::vector<int64_t> shape;
  size_t offset = 0, bytes = 0;  // within the data section
  int64_t numel() const;
};

// A safetensors file held in memory.
class SafeTensors {
 public:
  static SafeTensors load(const std::string& path);          // throws Error(kBundle)
  static SafeTensors parse(std::vector<uint8_t> bytes, const std::string& name);

  bool has(const std::string& name) const { return tensors_.count(name) != 0; }
  const TensorInfo& info(const std::string& name) const;
  // The tensor as float32, after checking it has exactly `shape`.
  std::vector<float> to_float(const std::string& name, const std::vector<int64_t>& shape) const;
  const std::map<std::string, TensorInfo>& tensors() const { return tensors_; }

 private:
  std::string name_;
  std::vector<uint8_t> bytes_;
  size_t data_start_ = 0;
  std::map<std::string, TensorInfo> tensors_;
};

struct Bundle {
  std::string dir;
  Json manifest;
  TransformerConfig lpd;
  VqConfig vq;
  SafeTensors weights;
};

// Opens dir/manifest.json and the files it lists. verify_hashes: recompute every sha256.
Bundle open_bundle(const std::string& dir, bool verify_hashes = true);

// The configs as stored in a manifest (exposed for tests).
TransformerConfig parse_transformer_config(const Json& j);
VqConfig parse_vq_config(const Json& j);

}  // namespace lpd
