// CPU GEMM over packed weight panels (see lpd/kernels/gemm.h for the determinism contract).
//
// A 4 x 16 register-blocked micro-kernel written with GCC vector extensions, so it compiles to
// AVX when the target has it and to SSE pairs otherwise; products and sums are separate
// operations (-ffp-contract=off), in increasing k. Work is split into (panel, row chunk)
// tasks, panel-major, so each thread keeps one weight panel hot while it sweeps rows.
#include <cmath>
#include <cstring>

#include "lpd/kernels/gemm.h"

namespace lpd::kernels {
namespace {

typedef float v8 __attribute__((vector_size(32)));
constexpr int64_t kMr = 4;
constexpr int64_t kRowChunk = 64;

inline v8 load8(const float* p) {
  v8 r;
  std::memcpy(&r, p, sizeof(r));
  return r;
}

inline float gelu(float x) { return x * 0.5f * (1.0f + std::erf(x * 0.70710678118654752440f)); }

template <int MR>
void micro_kernel(const float* a, int64_t lda, const float* bp, int64_t k, float out[kMr][kGemmPanel]) {
  v8 acc[MR][2];
  for (int i = 0; i < MR; ++i) acc[i][0] = acc[i][1] = v8{};
  for (int64_t kk = 0; kk < k; ++kk) {
    const v8 b0 = load8(bp + kk * kGemmPanel), b1 = load8(bp + kk * kGemmPanel + 8);
    for (int i = 0; i < MR; ++i) {
      const float s = a[i * lda + kk];
      const v8 av = {s, s, s, s, s, s, s, s};
      const v8 p0 = av * b0, p1 = av * b1;
      acc[i][0] = acc[i][0] + p0;
      acc[i][1] = acc[i][1] + p1;
    }
  }
  for (int i = 0; i < MR; ++i) {
    std::memcpy(out[i], &acc[i][0], sizeof(v8));
    std::memcpy(out[i] + 8, &acc[i][1], sizeof(v8));
  }
}

void run_rows(const float* a, int64_t lda, const float* bp, const float* bias, float* c, int64_t ldc, int64_t rows,
              int64_t col0, int64_t cols, int64_t k, Epilogue epilogue) {
  float tile[kMr][kGemmPanel];
  for (int64_t i0 = 0; i0 < rows; i0 += kMr) {
    const int64_t mr = rows - i0 < kMr ? rows - i0 : kMr;
    const float* ai = a + i0 * lda;
    switch (mr) {
      case 4: micro_kernel<4>(ai, lda, bp, k, tile); break;
      case 3: micro_kernel<3>(ai, lda, bp, k, tile); break;
      case 2: micro_kernel<2>(ai, lda, bp, k, tile); break;
      default: micro_kernel<1>(ai, lda, bp, k, tile); break;
    }
    for (int64_t i = 0; i < mr; ++i) {
      float* ci = c + (i0 + i) * ldc + col0;
      for (int64_t j = 0; j < cols; ++j) {
        float v = tile[i][j];
        if (bias) v = v + bias[col0 + j];
        if (epilogue == Epilogue::kGelu) v = gelu(v);
        ci[j] = epilogue == Epilogue::kAccumulate ? ci[j] + v : v;
      }
    }
  }
}

}  // namespace

size_t gemm_packed_size(int64_t n, int64_t k) {
  const int64_t panels = (n + kGemmPanel - 1) / kGemmPanel;
  return static_cast<size_t>(panels * k * kGemmPanel);
}

Status gemm_pack(const float* w, int64_t n, int64_t k, int64_t row_stride, int64_t col_stride, float* packed) {
  if (!w || !packed || n <= 0 || k <= 0) return Status::kInvalidArgument;
  const int64_t panels = (n + kGemmPanel - 1) / kGemmPanel;
#pragma omp parallel for schedule(static)
  for (int64_t p = 0; p < panels; ++p) {
    float* dst = packed + p * k * kGemmPanel;
    for (int64_t kk = 0; kk < k; ++kk)
      for (int64_t jj = 0; jj < kGemmPanel; ++jj) {
        const int64_t j = p * kGemmPanel + jj;
        dst[kk * kGemmPanel + jj] = j < n ? w[j * row_stride + kk * col_stride] : 0.0f;
      }
  }
  return Status::kOk;
}

Status gemm(const float* a, int64_t lda, const float* packed, const float* bias, float* c, int64_t ldc, int64_t m,
            int64_t n, int64_t k, Epilogue epilogue) {
  if (!a || !packed || !c || n <= 0 || k <= 0 || m < 0 || lda < k || ldc < n) return Status::kInvalidArgument;
  if (m == 0) return Status::kOk;
  const int64_t panels = (n + kGemmPanel - 1) / kGemmPanel;
  const int64_t chunks = (m + kRowChunk - 1) / kRowChunk;
  const int64_t tasks = panels * chunks;
#pragma omp parallel for schedule(static) if (tasks > 1 && m * n * k > 32768)
  for (int64_t t = 0; t < tasks; ++t) {
    const int64_t p = t / chunks, ch = t % chunks;
    const int64_t row0 = ch * kRowChunk;
    const int64_t rows = m - row0 < kRowChunk ? m - row0 : kRowChunk;
    const int64_t col0 = p * kGemmPanel;
    const int64_t cols = n - col0 < kGemmPanel ? n - col0 : kGemmPanel;
    run_rows(a + row0 * lda, lda, packed + p * k * kGemmPanel, bias, c + row0 * ldc, ldc, rows, col0, cols, k,
             epilogue);
  }
  return Status::kOk;
}

}  // namespace lpd::kernels
