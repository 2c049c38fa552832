// Dense float32 GEMM with pre-packed weights: c[m, n] (+)= a[m, k] . w[n, k]^T + bias[n].
//
// Every dense layer of the engine (qkv, proj, fc1, fc2, head, convolutions through im2col,
// the VQ spatial attention) runs through here. Weights are packed once into column panels of
// kGemmPanel columns ([panels][k][kGemmPanel], zero padded), so the micro-kernel streams one
// panel from L1 while it sweeps the rows.
//
// Determinism contract: each output element is sum_{k=0..K-1} a[i,k]*w[j,k] accumulated in
// increasing k, in float32, without FMA, then + bias, then the epilogue. That order does not
// depend on m, on which other rows are in the batch, or on the thread count, so a request
// gives the same bits whatever it is batched with.
#pragma once

#include <cstddef>
#include <cstdint>

#include "lpd/kernels/common.h"

namespace lpd::kernels {

constexpr int64_t kGemmPanel = 16;

enum class Epilogue : int {
  kStore = 0,  // c = a.w^T + bias
  kGelu = 1,   // c = gelu_erf(a.w^T + bias)
  kAccumulate = 2,  // c = c + (a.w^T + bias)   (residual connections)
};

// Floats needed to pack a [n, k] weight.
size_t gemm_packed_size(int64_t n, int64_t k);

// Packs w into `packed` (gemm_packed_size(n, k) floats). Element (j, kk) of the logical
// [n, k] weight is w[j * row_stride + kk * col_stride], so a transpose packs without a copy.
Status gemm_pack(const float* w, int64_t n, int64_t k, int64_t row_stride, int64_t col_stride, float* packed);

// c[i * ldc + j] for i < m, j < n. bias may be null. a and c must not overlap.
Status gemm(const float* a, int64_t lda, const float* packed, const float* bias, float* c, int64_t ldc,
            int64_t m, int64_t n, int64_t k, Epilogue epilogue);

namespace cuda {
// bf16 GEMM through cuBLASLt with float32 accumulation: c[m, n] (+)= a[m, k] . w[n, k]^T + bias
// (optionally batched, optionally with w stored [k, n]). With dtype kF32, a and w are float32
// and the product is a plain float32 GEMM (no TF32); c must then be float32 too.
// out_fp32 picks c's type (float32 or bf16); bias (may be null) has c's type and is added in
// the epilogue; accumulate adds into c (beta = 1: the residual add, fused). A GemmContext owns
// the cuBLASLt handle, a workspace and the cached descriptors/algorithms for each shape, so
// the calls can be captured in CUDA graphs after a first, uncaptured call of each shape.
struct GemmContext;
GemmContext* gemm_context_create();
void gemm_context_destroy(GemmContext* ctx);
struct GemmArgs {
  const void* a;  // [m, k] of dtype, row stride lda
  int64_t lda;
  const void* w;  // [n, k] of dtype, row stride ldw
  int64_t ldw;
  const void* bias;  // [n] of c's type, or null
  void* c;           // [m, n], row stride ldc
  int64_t ldc;
  int64_t m, n, k;
  bool out_fp32;
  bool accumulate;
  // w_kn: w is stored [k, n] (row stride ldw) instead of [n, k], i.e. c = a . w.
  bool w_kn = false;
  // batch > 1: `batch` independent products, operand i at a + i * stride_a (elements), etc.
  int64_t batch = 1, stride_a = 0, stride_w = 0, stride_c = 0;
  DType dtype = DType::kBF16;  // a's and w's type
};
Status gemm(GemmContext* ctx, const GemmArgs& args, Stream stream);

}  // namespace cuda

}  // namespace lpd::kernels
