// The LlamaGen VQ decoder on the CPU: token ids -> RGB uint8 (lpd-facts.md §5).
//
// Activations are channels-last ([pixels, channels]) so every convolution is an im2col GEMM on
// the same packed-weight kernel as the transformer. Weights come from the bundle under
// vq.codebook, vq.post_quant_conv.* and vq.decoder.* (LlamaGen's decoder names after the prefix).
#pragma once

#include <cstdint>
#include <vector>

#include "lpd/bundle.h"
#include "lpd/transformer.h"

namespace lpd {

class VqDecoder {
 public:
  static VqDecoder load(const Bundle& bundle);
  // tokens: [grid * grid] raster-order codes; rgb: [H, W, 3] uint8 with H = W = grid * downsample.
  // Pixels are round-half-even(clip((x + 1) / 2 * 255, 0, 255)) computed in float32.
  void decode(const int64_t* tokens, int64_t grid, uint8_t* rgb) const;

 private:
  struct Conv {
    Linear lin;  // packed [c_out, c_in * k * k]
    int64_t kernel = 1;
  };
  struct Resnet {
    Norm norm1, norm2;
    Conv conv1, conv2, nin_shortcut;
    bool has_shortcut = false;
  };
  struct Attn {
    Norm norm;
    Conv q, k, v, proj_out;
  };
  struct Level {
    std::vector<Resnet> res;
    std::vector<Attn> attn;
    bool has_upsample = false;
    Conv upsample;
  };
  VqConfig config_;
  std::vector<float> codebook_;  // [codebook_size, codebook_dim], L2-normalised rows
  Conv post_quant_conv_, conv_in_, conv_out_;
  Resnet mid0_, mid2_;
  Attn mid1_;
  std::vector<Level> levels_;
  Norm norm_out_;

  static Conv load_conv(const SafeTensors& st, const std::string& prefix, int64_t c_out, int64_t c_in, int64_t k);
  static Resnet load_resnet(const SafeTensors& st, const std::string& prefix, int64_t c_in, int64_t c_out);
  static Attn load_attn(const SafeTensors& st, const std::string& prefix, int64_t c);

  struct Buffers;
  void conv(const Conv& c, const float* x, int64_t h, int64_t w, float* out, bool accumulate, Buffers& b) const;
  void resnet(const Resnet& r, std::vector<float>& x, int64_t h, int64_t w, int64_t c_in, Buffers& b) const;
  void attn(const Attn& a, std::vector<float>& x, int64_t h, int64_t w, int64_t c, Buffers& b) const;
};

}  // namespace lpd
