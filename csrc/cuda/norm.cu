// LayerNorm (float32 in, bf16 out, optional row gather) and exact GELU on bf16, for the GPU
// step decoder (lpd/kernels/norm.h). One block per row; the row is read twice (mean, then the
// centred variance) from L1/L2 rather than held in registers, so any dim works.
#include "common.cuh"
#include "lpd/kernels/norm.h"

namespace lpd::kernels::cuda {
namespace {

using namespace detail;

__global__ void layer_norm_kernel(const float* __restrict__ x, int64_t ldx, const int32_t* __restrict__ row_index,
                                  const float* __restrict__ gamma, const float* __restrict__ beta, float eps,
                                  nv_bf16* __restrict__ out, int64_t ldo, int64_t dim) {
  __shared__ float scratch[33];
  const int64_t r = blockIdx.x;
  const float* row = x + (row_index ? static_cast<int64_t>(row_index[r]) : r) * ldx;
  float s = 0.0f;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) s += row[i];
  const float mean = block_sum(s, scratch) / static_cast<float>(dim);
  float q = 0.0f;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
    const float d = row[i] - mean;
    q += d * d;
  }
  const float rstd = rsqrtf(block_sum(q, scratch) / static_cast<float>(dim) + eps);
  nv_bf16* o = out + r * ldo;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x)
    o[i] = __float2bfloat16((row[i] - mean) * rstd * gamma[i] + beta[i]);
}

__global__ void gelu_kernel(nv_bf16* __restrict__ x, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float v = __bfloat162float(x[i]);
    x[i] = __float2bfloat16(0.5f * v * (1.0f + erff(v * 0.70710678118654752f)));
  }
}

}  // namespace

Status layer_norm(const float* x, int64_t ldx, const int32_t* row_index, const float* gamma, const float* beta,
                  float eps, bf16* out, int64_t ldo, int64_t num_rows, int64_t dim, Stream stream) {
  if (!x || !gamma || !beta || !out || num_rows < 0 || dim <= 0 || ldx < dim || ldo < dim)
    return Status::kInvalidArgument;
  if (num_rows == 0) return Status::kOk;
  layer_norm_kernel<<<static_cast<unsigned>(num_rows), 256, 0, stream>>>(x, ldx, row_index, gamma, beta, eps,
                                                                         as_nv(out), ldo, dim);
  return launched();
}

Status gelu_erf(bf16* x, int64_t n, Stream stream) {
  if (!x || n < 0) return Status::kInvalidArgument;
  if (n == 0) return Status::kOk;
  const int64_t blocks = std::min<int64_t>((n + 255) / 256, 132 * 16);
  gelu_kernel<<<static_cast<unsigned>(blocks), 256, 0, stream>>>(as_nv(x), n);
  return launched();
}

}  // namespace lpd::kernels::cuda
