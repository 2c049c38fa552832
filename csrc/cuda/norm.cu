// LayerNorm (float32 in, bf16 out, optional row gather) and exact GELU on bf16, for the GPU
// step decoder, and GroupNorm (+ swish) over bf16 NHWC images for the VQ decoder
// (lpd/kernels/norm.h). LayerNorm: one warp per row with the row in registers (float4) for
// dims up to 2048 that are multiples of 4 (mean, then the centred variance from the registers);
// otherwise one block per row reading the row twice from L1/L2. GELU: 8 values per 16-byte
// access where the buffer allows. GroupNorm: the
// image is too large for one block, so a statistics pass (16-byte loads, per-channel sums in
// registers, per-block partials, then a fixed-order float64 reduction: the same bits every
// run) precedes an elementwise apply pass.
#include "common.cuh"
#include "lpd/kernels/norm.h"

namespace lpd::kernels::cuda {
namespace {

using namespace detail;

// One warp per row, the row in registers as float4 (dim a multiple of 4, at most 128 * kVecs):
// mean, then the centred variance from the registers, then bf16 pairs out.
template <int kVecs>
__global__ void layer_norm_warp_kernel(const float* __restrict__ x, int64_t ldx, const int32_t* __restrict__ row_index,
                                       const float* __restrict__ gamma, const float* __restrict__ beta, float eps,
                                       nv_bf16* __restrict__ out, int64_t ldo, int64_t rows, int64_t dim) {
  pdl_enter();
  const int64_t r = blockIdx.x * static_cast<int64_t>(blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x & 31;
  if (r >= rows) return;
  const float4* row = reinterpret_cast<const float4*>(x + (row_index ? static_cast<int64_t>(row_index[r]) : r) * ldx);
  const int64_t vecs = dim / 4;
  float4 v[kVecs];
  float s = 0.0f;
#pragma unroll
  for (int i = 0; i < kVecs; ++i) {
    const int64_t c = lane + 32 * i;
    v[i] = c < vecs ? row[c] : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    s += (v[i].x + v[i].y) + (v[i].z + v[i].w);
  }
  for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
  const float mean = s / static_cast<float>(dim);
  float q = 0.0f;
#pragma unroll
  for (int i = 0; i < kVecs; ++i) {
    if (lane + 32 * i < vecs) {
      const float a = v[i].x - mean, b = v[i].y - mean, c = v[i].z - mean, d = v[i].w - mean;
      q += (a * a + b * b) + (c * c + d * d);
    }
  }
  for (int o = 16; o > 0; o >>= 1) q += __shfl_xor_sync(0xffffffffu, q, o);
  const float rstd = rsqrtf(q / static_cast<float>(dim) + eps);
  __nv_bfloat162* o2 = reinterpret_cast<__nv_bfloat162*>(out + r * ldo);
  const float4* g4 = reinterpret_cast<const float4*>(gamma);
  const float4* b4 = reinterpret_cast<const float4*>(beta);
#pragma unroll
  for (int i = 0; i < kVecs; ++i) {
    const int64_t c = lane + 32 * i;
    if (c < vecs) {
      const float4 g = g4[c], b = b4[c];
      o2[2 * c] = __floats2bfloat162_rn((v[i].x - mean) * rstd * g.x + b.x, (v[i].y - mean) * rstd * g.y + b.y);
      o2[2 * c + 1] = __floats2bfloat162_rn((v[i].z - mean) * rstd * g.z + b.z, (v[i].w - mean) * rstd * g.w + b.w);
    }
  }
}

// Any dim: one block per row, the row read twice from L1/L2.
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

__device__ inline float gelu(float v) { return 0.5f * v * (1.0f + erff(v * 0.70710678118654752f)); }

__global__ void gelu_kernel(nv_bf16* __restrict__ x, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    x[i] = __float2bfloat16(gelu(__bfloat162float(x[i])));
}

// 8 values per 16-byte access.
__global__ void gelu_vec_kernel(uint4* __restrict__ x, int64_t vectors) {
  pdl_enter();
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < vectors;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    uint4 v = x[i];
    __nv_bfloat162* h = reinterpret_cast<__nv_bfloat162*>(&v);
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const float2 f = __bfloat1622float2(h[j]);
      h[j] = __floats2bfloat162_rn(gelu(f.x), gelu(f.y));
    }
    x[i] = v;
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
// rows t / vpp, t / vpp + rows_per_iter, ... so its 8 channels never change. Writes the block's
// per-group sum and sum of squares to partial[image][block][group][2].
__global__ void group_norm_partial_kernel(nv_bf16* __restrict__ x, const nv_bf16* __restrict__ bias, bool fold,
                                          int64_t pixels, int64_t channels, int64_t groups, int64_t chunk,
                                          float* __restrict__ partial) {
  __shared__ float per_thread[2][kGnThreads * 8];  // [sum, squares][row0 * channels + channel]
  const int64_t vpp = channels / 8, rows_per_iter = kGnThreads / vpp;
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
      per_thread[0][row0 * channels + col * 8 + j] = s[j];
      per_thread[1][row0 * channels + col * 8 + j] = q[j];
    }
  }
  __syncthreads();
  // Fixed-order sums (no atomics): the same bits every run.
  const int64_t per_group = channels / groups;
  float* out = partial + (static_cast<int64_t>(blockIdx.y) * gridDim.x + blockIdx.x) * groups * 2;
  for (int64_t g = threadIdx.x; g < groups; g += blockDim.x) {
    float sg = 0.0f, qg = 0.0f;
    for (int64_t c = g * per_group; c < (g + 1) * per_group; ++c)
      for (int64_t r = 0; r < rows_per_iter; ++r) {
        sg += per_thread[0][r * channels + c];
        qg += per_thread[1][r * channels + c];
      }
    out[2 * g] = sg;
    out[2 * g + 1] = qg;
  }
}

// One block per image: the blocks' partials summed in order (float64), then mean and rstd.
__global__ void group_norm_finalize_kernel(const float* __restrict__ partial, int64_t blocks, int64_t groups,
                                           double count, float eps, float* __restrict__ stats) {
  for (int64_t g = threadIdx.x; g < groups; g += blockDim.x) {
    double s = 0.0, q = 0.0;
    for (int64_t b = 0; b < blocks; ++b) {
      const float* u = partial + ((blockIdx.x * blocks + b) * groups + g) * 2;
      s += u[0];
      q += u[1];
    }
    const double mean = s / count, var = fmax(q / count - mean * mean, 0.0);
    stats[(blockIdx.x * groups + g) * 2] = static_cast<float>(mean);
    stats[(blockIdx.x * groups + g) * 2 + 1] = rsqrtf(static_cast<float>(var) + eps);
  }
}

__global__ void group_norm_apply_kernel(const nv_bf16* __restrict__ x, const nv_bf16* __restrict__ bias,
                                        const float* __restrict__ stats, const float* __restrict__ gamma,
                                        const float* __restrict__ beta, bool swish, int64_t pixels,
                                        int64_t channels, int64_t groups, nv_bf16* __restrict__ out) {
  extern __shared__ float stat[];  // [groups][2]: mean, rstd of image blockIdx.y
  for (int64_t i = threadIdx.x; i < 2 * groups; i += blockDim.x) stat[i] = stats[blockIdx.y * groups * 2 + i];
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
      if (bias) f = __bfloat162float(__float2bfloat16(f + __bfloat162float(bias[c])));  // as a folded x holds it
      f = (f - stat[2 * g]) * stat[2 * g + 1] * gamma[c] + beta[c];
      if (swish) f = f / (1.0f + __expf(-f));
      v.set(j, f);
    }
    o[i] = v.raw;
  }
}

int64_t gn_chunk(int64_t channels) { return std::max<int64_t>(1, 65536 / channels); }

}  // namespace

size_t group_norm_workspace_floats(int64_t n, int64_t pixels, int64_t channels, int64_t groups) {
  if (n <= 0 || pixels <= 0 || channels <= 0 || groups <= 0) return 0;
  const int64_t chunk = gn_chunk(channels);
  return static_cast<size_t>(n * ((pixels + chunk - 1) / chunk) * groups * 2);
}

Status group_norm_stats(bf16* x, const bf16* bias, bool fold, int64_t n, int64_t pixels, int64_t channels,
                        int64_t groups, float eps, float* workspace, float* stats, Stream stream) {
  if (!x || !workspace || !stats || n <= 0 || pixels <= 0 || channels <= 0 || groups <= 0 || channels % groups)
    return Status::kInvalidArgument;
  if (channels % 8 || channels / 8 > kGnThreads) return Status::kUnsupported;
  const int64_t chunk = gn_chunk(channels), blocks = (pixels + chunk - 1) / chunk;
  group_norm_partial_kernel<<<dim3(static_cast<unsigned>(blocks), static_cast<unsigned>(n)), kGnThreads, 0,
                              stream>>>(as_nv(x), as_nv(bias), fold, pixels, channels,
                                                                      groups, chunk, workspace);
  if (cudaPeekAtLastError() != cudaSuccess) return Status::kDeviceError;
  const double count = static_cast<double>(pixels) * static_cast<double>(channels / groups);
  group_norm_finalize_kernel<<<static_cast<unsigned>(n), 128, 0, stream>>>(workspace, blocks, groups, count, eps,
                                                                           stats);
  return launched();
}

Status group_norm_apply(const bf16* x, const bf16* bias, const float* stats, const float* gamma, const float* beta,
                        bool swish, int64_t n, int64_t pixels, int64_t channels, int64_t groups, bf16* out,
                        Stream stream) {
  if (!x || !stats || !gamma || !beta || !out || n <= 0 || pixels <= 0 || channels <= 0 || groups <= 0 ||
      channels % groups)
    return Status::kInvalidArgument;
  if (channels % 8) return Status::kUnsupported;
  const int64_t vectors = pixels * channels / 8;
  const dim3 grid(static_cast<unsigned>(std::min<int64_t>((vectors + kGnThreads - 1) / kGnThreads, 1024)),
                  static_cast<unsigned>(n));
  group_norm_apply_kernel<<<grid, kGnThreads, 2 * groups * sizeof(float), stream>>>(
      as_nv(x), as_nv(bias), stats, gamma, beta, swish, pixels, channels, groups, as_nv(out));
  return launched();
}

Status layer_norm(const float* x, int64_t ldx, const int32_t* row_index, const float* gamma, const float* beta,
                  float eps, bf16* out, int64_t ldo, int64_t num_rows, int64_t dim, Stream stream) {
  if (!x || !gamma || !beta || !out || num_rows < 0 || dim <= 0 || ldx < dim || ldo < dim)
    return Status::kInvalidArgument;
  if (num_rows == 0) return Status::kOk;
  const auto aligned16 = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  const bool vec = dim % 4 == 0 && ldx % 4 == 0 && ldo % 2 == 0 && aligned16(x) && aligned16(gamma) &&
                   aligned16(beta) && reinterpret_cast<uintptr_t>(out) % 4 == 0;
  const unsigned blocks = static_cast<unsigned>((num_rows + 7) / 8);  // 8 rows (warps) per block
  if (vec && dim <= 128 * 4)
    return launch_dependent(layer_norm_warp_kernel<4>, blocks, 256, 0, stream, x, ldx, row_index, gamma, beta, eps,
                            as_nv(out), ldo, num_rows, dim);
  if (vec && dim <= 128 * 8)
    return launch_dependent(layer_norm_warp_kernel<8>, blocks, 256, 0, stream, x, ldx, row_index, gamma, beta, eps,
                            as_nv(out), ldo, num_rows, dim);
  if (vec && dim <= 128 * 16)
    return launch_dependent(layer_norm_warp_kernel<16>, blocks, 256, 0, stream, x, ldx, row_index, gamma, beta, eps,
                            as_nv(out), ldo, num_rows, dim);
  layer_norm_kernel<<<static_cast<unsigned>(num_rows), 256, 0, stream>>>(x, ldx, row_index, gamma, beta, eps,
                                                                         as_nv(out), ldo, dim);
  return launched();
}

Status gelu_erf(bf16* x, int64_t n, Stream stream) {
  if (!x || n < 0) return Status::kInvalidArgument;
  if (n == 0) return Status::kOk;
  if (n % 8 == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0) {
    const int64_t vectors = n / 8;
    return launch_dependent(gelu_vec_kernel, grid_stride_blocks(vectors, 132 * 16), 256, 0, stream,
                            reinterpret_cast<uint4*>(x), vectors);
  }
  gelu_kernel<<<grid_stride_blocks(n, 132 * 16), 256, 0, stream>>>(as_nv(x), n);
  return launched();
}

}  // namespace lpd::kernels::cuda
