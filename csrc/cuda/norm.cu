// LayerNorm (float32 in, bf16 out, optional row gather) and exact GELU on bf16, for the GPU
// step decoder, and GroupNorm (+ swish) over bf16 NHWC images for the VQ decoder
// (lpd/kernels/norm.h). LayerNorm: one block per row; the row is read twice (mean, then the
// centred variance) from L1/L2 rather than held in registers, so any dim works. GroupNorm: the
// image is too large for one block, so a statistics pass (16-byte loads, per-channel sums in
// registers, then per-group float64 atomics) precedes an elementwise apply pass.
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

constexpr int kGnThreads = 256;

struct Vec8 {  // 8 bf16 channels, one 16-byte access
  uint4 raw;
  __device__ float get(int i) const {
    return __bfloat162float(reinterpret_cast<const nv_bf16*>(&raw)[i]);
  }
  __device__ void set(int i, float v) { reinterpret_cast<nv_bf16*>(&raw)[i] = __float2bfloat16(v); }
};

// Block: a chunk of pixels of one image (blockIdx.y). Thread t owns channel vector t % vpp of
// rows t / vpp, t / vpp + rows_per_iter, ... so its 8 channels never change.
__global__ void group_norm_stats_kernel(nv_bf16* __restrict__ x, const nv_bf16* __restrict__ bias, bool fold,
                                        int64_t pixels, int64_t channels, int64_t groups, int64_t chunk,
                                        double* __restrict__ sums) {
  extern __shared__ float acc[];  // [2 * channels]
  const int64_t vpp = channels / 8, rows_per_iter = kGnThreads / vpp;
  for (int64_t i = threadIdx.x; i < 2 * channels; i += blockDim.x) acc[i] = 0.0f;
  __syncthreads();
  const int64_t col = threadIdx.x % vpp, row0 = threadIdx.x / vpp;
  if (row0 < rows_per_iter) {
    float b[8], s[8] = {}, q[8] = {};
    for (int j = 0; j < 8; ++j) b[j] = bias ? __bfloat162float(bias[col * 8 + j]) : 0.0f;
    const int64_t first = blockIdx.x * chunk, last = min(first + chunk, pixels);
    uint4* base = reinterpret_cast<uint4*>(x + blockIdx.y * pixels * channels) + col;
    for (int64_t p = first + row0; p < last; p += rows_per_iter) {
      Vec8 v{base[p * vpp]};
      if (bias) {
        for (int j = 0; j < 8; ++j) v.set(j, v.get(j) + b[j]);
        if (fold) base[p * vpp] = v.raw;
      }
      for (int j = 0; j < 8; ++j) {
        const float f = v.get(j);
        s[j] += f;
        q[j] += f * f;
      }
    }
    for (int j = 0; j < 8; ++j) {
      atomicAdd(&acc[col * 8 + j], s[j]);
      atomicAdd(&acc[channels + col * 8 + j], q[j]);
    }
  }
  __syncthreads();
  const int64_t per_group = channels / groups;
  for (int64_t g = threadIdx.x; g < groups; g += blockDim.x) {
    double s = 0.0, q = 0.0;
    for (int64_t c = g * per_group; c < (g + 1) * per_group; ++c) {
      s += acc[c];
      q += acc[channels + c];
    }
    atomicAdd(&sums[(blockIdx.y * groups + g) * 2], s);
    atomicAdd(&sums[(blockIdx.y * groups + g) * 2 + 1], q);
  }
}

__global__ void group_norm_apply_kernel(const nv_bf16* __restrict__ x, const nv_bf16* __restrict__ bias,
                                        const double* __restrict__ sums, const float* __restrict__ gamma,
                                        const float* __restrict__ beta, float eps, bool swish, int64_t pixels,
                                        int64_t channels, int64_t groups, nv_bf16* __restrict__ out) {
  extern __shared__ float stat[];  // [groups][2]: mean, rstd of image blockIdx.y
  const double count = static_cast<double>(pixels) * static_cast<double>(channels / groups);
  for (int64_t g = threadIdx.x; g < groups; g += blockDim.x) {
    const double* sg = sums + (blockIdx.y * groups + g) * 2;
    const double mean = sg[0] / count, var = fmax(sg[1] / count - mean * mean, 0.0);
    stat[2 * g] = static_cast<float>(mean);
    stat[2 * g + 1] = rsqrtf(static_cast<float>(var) + eps);
  }
  __syncthreads();
  const int64_t vpp = channels / 8, per_group = channels / groups, vectors = pixels * vpp;
  const uint4* in = reinterpret_cast<const uint4*>(x + blockIdx.y * pixels * channels);
  uint4* o = reinterpret_cast<uint4*>(out + blockIdx.y * pixels * channels);
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < vectors;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    Vec8 v{in[i]};
    const int64_t c0 = (i % vpp) * 8;
    for (int j = 0; j < 8; ++j) {
      const int64_t c = c0 + j, g = c / per_group;
      float f = v.get(j);
      if (bias) f += __bfloat162float(bias[c]);
      if (bias) f = __bfloat162float(__float2bfloat16(f));  // the value a folded x would hold
      f = (f - stat[2 * g]) * stat[2 * g + 1] * gamma[c] + beta[c];
      if (swish) f = f / (1.0f + __expf(-f));
      v.set(j, f);
    }
    o[i] = v.raw;
  }
}

}  // namespace

Status group_norm_stats(bf16* x, const bf16* bias, bool fold, int64_t n, int64_t pixels, int64_t channels,
                        int64_t groups, double* sums, Stream stream) {
  if (!x || !sums || n <= 0 || pixels <= 0 || channels <= 0 || groups <= 0 || channels % groups) return Status::kInvalidArgument;
  if (channels % 8 || channels / 8 > kGnThreads) return Status::kUnsupported;
  if (cudaMemsetAsync(sums, 0, static_cast<size_t>(n * groups * 2) * sizeof(double), stream) != cudaSuccess)
    return Status::kDeviceError;
  const int64_t chunk = std::max<int64_t>(1, 65536 / channels);
  const dim3 grid(static_cast<unsigned>((pixels + chunk - 1) / chunk), static_cast<unsigned>(n));
  group_norm_stats_kernel<<<grid, kGnThreads, 2 * channels * sizeof(float), stream>>>(
      as_nv(x), as_nv(bias), fold, pixels, channels, groups, chunk, sums);
  return launched();
}

Status group_norm_apply(const bf16* x, const bf16* bias, const double* sums, const float* gamma, const float* beta,
                        float eps, bool swish, int64_t n, int64_t pixels, int64_t channels, int64_t groups, bf16* out,
                        Stream stream) {
  if (!x || !sums || !gamma || !beta || !out || n <= 0 || pixels <= 0 || channels <= 0 || groups <= 0 ||
      channels % groups)
    return Status::kInvalidArgument;
  if (channels % 8) return Status::kUnsupported;
  const int64_t vectors = pixels * channels / 8;
  const dim3 grid(static_cast<unsigned>(std::min<int64_t>((vectors + kGnThreads - 1) / kGnThreads, 1024)),
                  static_cast<unsigned>(n));
  group_norm_apply_kernel<<<grid, kGnThreads, 2 * groups * sizeof(float), stream>>>(
      as_nv(x), as_nv(bias), sums, gamma, beta, eps, swish, pixels, channels, groups, as_nv(out));
  return launched();
}

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
