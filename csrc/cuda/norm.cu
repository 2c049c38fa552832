// LayerNorm (float32 in, bf16 or float32 out, optional row gather) and exact GELU in place on
// bf16 or float32, for the GPU step decoder, and GroupNorm (+ swish) over bf16 NHWC images for the VQ decoder
// (lpd/kernels/norm.h). LayerNorm: one warp per row with the row in registers (float4) for
// dims up to 2048 that are multiples of 4 (mean, then the centred variance from the registers);
// otherwise one block per row reading the row twice from L1/L2. GELU: 8 values per 16-byte
// access where the buffer allows. GroupNorm: the image is too large for one block, so a
// statistics pass (16-byte loads, several in flight per thread, per-channel sums in registers,
// per-block partials, then a fixed-order float64 reduction: the same bits every run) precedes
// an elementwise apply pass (the per-channel affine of the image set up in shared memory).
#include "common.cuh"
#include "lpd/kernels/norm.h"

namespace lpd::kernels::cuda {
namespace {

using namespace detail;

// One warp per row, the row in registers as float4 (dim a multiple of 4, at most 128 * kVecs):
// mean, then the centred variance from the registers, then 4 values per store. gamma and beta are
// weights no kernel writes, so the block stages them in shared memory before the
// programmatic-launch wait (common.cuh): their latency overlaps the predecessor's tail.
__device__ __forceinline__ void store4(nv_bf16* o, int64_t c, float a, float b, float d, float e) {
  reinterpret_cast<__nv_bfloat162*>(o)[2 * c] = __floats2bfloat162_rn(a, b);
  reinterpret_cast<__nv_bfloat162*>(o)[2 * c + 1] = __floats2bfloat162_rn(d, e);
}
__device__ __forceinline__ void store4(float* o, int64_t c, float a, float b, float d, float e) {
  reinterpret_cast<float4*>(o)[c] = make_float4(a, b, d, e);
}

template <int kVecs, typename OutT>
__global__ void layer_norm_warp_kernel(const float* __restrict__ x, int64_t ldx, const int32_t* __restrict__ row_index,
                                       const float* __restrict__ gamma, const float* __restrict__ beta, float eps,
                                       OutT* __restrict__ out, int64_t ldo, int64_t rows, int64_t dim) {
  __shared__ float4 gb[2][32 * kVecs];  // gamma, beta
  const int64_t vecs = dim / 4;
  for (int64_t c = threadIdx.x; c < vecs; c += blockDim.x) {
    gb[0][c] = reinterpret_cast<const float4*>(gamma)[c];
    gb[1][c] = reinterpret_cast<const float4*>(beta)[c];
  }
  __syncthreads();
  pdl_enter();
  const int64_t r = blockIdx.x * static_cast<int64_t>(blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x & 31;
  if (r >= rows) return;
  const float4* row = reinterpret_cast<const float4*>(x + (row_index ? static_cast<int64_t>(row_index[r]) : r) * ldx);
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
  OutT* o = out + r * ldo;
#pragma unroll
  for (int i = 0; i < kVecs; ++i) {
    const int64_t c = lane + 32 * i;
    if (c < vecs) {
      const float4 g = gb[0][c], b = gb[1][c];
      store4(o, c, (v[i].x - mean) * rstd * g.x + b.x, (v[i].y - mean) * rstd * g.y + b.y,
             (v[i].z - mean) * rstd * g.z + b.z, (v[i].w - mean) * rstd * g.w + b.w);
    }
  }
}

// Any dim: one block per row, the row read twice from L1/L2.
template <typename OutT>
__global__ void layer_norm_kernel(const float* __restrict__ x, int64_t ldx, const int32_t* __restrict__ row_index,
                                  const float* __restrict__ gamma, const float* __restrict__ beta, float eps,
                                  OutT* __restrict__ out, int64_t ldo, int64_t dim) {
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
  OutT* o = out + r * ldo;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) o[i] = from_f32<OutT>((row[i] - mean) * rstd * gamma[i] + beta[i]);
}

__device__ inline float gelu(float v) { return 0.5f * v * (1.0f + erff(v * 0.70710678118654752f)); }

template <typename T>
__global__ void gelu_kernel(T* __restrict__ x, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    x[i] = from_f32<T>(gelu(to_f32(x[i])));
}

// bf16, 8 values per 16-byte access.
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
constexpr int kGnLoads = 4;             // 16-byte loads in flight per thread
constexpr int kGnBlocksPerImage = 128;  // statistics blocks per image, where the image allows

struct Vec8 {  // 8 bf16 channels, one 16-byte access
  uint4 raw;
  __device__ float get(int i) const {
    return __bfloat162float(reinterpret_cast<const nv_bf16*>(&raw)[i]);
  }
  __device__ void set(int i, float v) { reinterpret_cast<nv_bf16*>(&raw)[i] = __float2bfloat16(v); }
};

// Block: pixels [first, first + chunk) of image blockIdx.y. Thread t owns channel vector
// t % vpp of pixels t / vpp + k * rows_per_iter, so its 8 channels never change; it keeps
// kGnLoads loads in flight. Writes the block's per-group sum and sum of squares to
// partial[image][block][group][2], summed in a fixed order (no atomics: the same bits every run).
__global__ void __launch_bounds__(kGnThreads) group_norm_partial_kernel(nv_bf16* __restrict__ x,
                                                                        const nv_bf16* __restrict__ bias, bool fold,
                                                                        int pixels, int channels, int groups,
                                                                        int chunk, float* __restrict__ partial) {
  __shared__ float per_thread[2][kGnThreads * 8];  // [sum, squares][row0 * channels + channel]
  const int vpp = channels / 8, rows_per_iter = kGnThreads / vpp;
  const int col = threadIdx.x % vpp, row0 = threadIdx.x / vpp;
  if (row0 < rows_per_iter) {
    float b[8], s[8] = {}, q[8] = {};
    for (int j = 0; j < 8; ++j) b[j] = bias ? __bfloat162float(bias[col * 8 + j]) : 0.0f;
    const int first = blockIdx.x * chunk, last = min(first + chunk, pixels);
    uint4* base = reinterpret_cast<uint4*>(x + static_cast<int64_t>(blockIdx.y) * pixels * channels) + col;
    for (int p = first + row0; p < last; p += kGnLoads * rows_per_iter) {
      Vec8 v[kGnLoads];
#pragma unroll
      for (int k = 0; k < kGnLoads; ++k)
        if (p + k * rows_per_iter < last) v[k].raw = base[static_cast<int64_t>(p + k * rows_per_iter) * vpp];
#pragma unroll
      for (int k = 0; k < kGnLoads; ++k) {
        if (p + k * rows_per_iter >= last) break;
        if (bias) {
          for (int j = 0; j < 8; ++j) v[k].set(j, v[k].get(j) + b[j]);
          if (fold) base[static_cast<int64_t>(p + k * rows_per_iter) * vpp] = v[k].raw;
        }
#pragma unroll
        for (int j = 0; j < 8; ++j) {
          const float f = v[k].get(j);
          s[j] += f;
          q[j] += f * f;
        }
      }
    }
    for (int j = 0; j < 8; ++j) {
      per_thread[0][row0 * channels + col * 8 + j] = s[j];
      per_thread[1][row0 * channels + col * 8 + j] = q[j];
    }
  }
  __syncthreads();
  // Per channel over the rows (into row 0; each thread owns its channels' column), then per group.
  for (int c = threadIdx.x; c < channels; c += blockDim.x) {
    float sc = per_thread[0][c], qc = per_thread[1][c];
    for (int r = 1; r < rows_per_iter; ++r) {
      sc += per_thread[0][r * channels + c];
      qc += per_thread[1][r * channels + c];
    }
    per_thread[0][c] = sc;
    per_thread[1][c] = qc;
  }
  __syncthreads();
  const int per_group = channels / groups;
  float* out = partial + (static_cast<int64_t>(blockIdx.y) * gridDim.x + blockIdx.x) * groups * 2;
  for (int g = threadIdx.x; g < groups; g += blockDim.x) {
    float sg = 0.0f, qg = 0.0f;
    for (int c = g * per_group; c < (g + 1) * per_group; ++c) {
      sg += per_thread[0][c];
      qg += per_thread[1][c];
    }
    out[2 * g] = sg;
    out[2 * g + 1] = qg;
  }
}

// One block per image, one warp per group: the lanes sum strided blocks' partials in float64,
// then a fixed shuffle tree (the same bits every run); then mean and rstd.
__global__ void group_norm_finalize_kernel(const float* __restrict__ partial, int blocks, int groups, double count,
                                           float eps, float* __restrict__ stats) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  for (int g = warp; g < groups; g += blockDim.x / 32) {
    double s = 0.0, q = 0.0;
    for (int b = lane; b < blocks; b += 32) {
      const float* u = partial + ((static_cast<int64_t>(blockIdx.x) * blocks + b) * groups + g) * 2;
      s += u[0];
      q += u[1];
    }
    for (int o = 16; o > 0; o >>= 1) {
      s += __shfl_xor_sync(0xffffffffu, s, o);
      q += __shfl_xor_sync(0xffffffffu, q, o);
    }
    if (lane == 0) {
      const double mean = s / count, var = fmax(q / count - mean * mean, 0.0);
      stats[(blockIdx.x * groups + g) * 2] = static_cast<float>(mean);
      stats[(blockIdx.x * groups + g) * 2 + 1] = rsqrtf(static_cast<float>(var) + eps);
    }
  }
}

// y = x' * scale + shift (x' = x + bias rounded to bf16, as a folded x holds it), then swish,
// over one vector of 8 channels.
__device__ __forceinline__ uint4 gn_apply8(uint4 v, const float* scale, const float* shift, const float* bias,
                                           bool swish) {
  __nv_bfloat162* h = reinterpret_cast<__nv_bfloat162*>(&v);
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    float2 f = __bfloat1622float2(h[j]);
    if (bias) f = __bfloat1622float2(__floats2bfloat162_rn(f.x + bias[2 * j], f.y + bias[2 * j + 1]));
    f.x = f.x * scale[2 * j] + shift[2 * j];
    f.y = f.y * scale[2 * j + 1] + shift[2 * j + 1];
    if (swish) {
      f.x = __fdividef(f.x, 1.0f + __expf(-f.x));
      f.y = __fdividef(f.y, 1.0f + __expf(-f.y));
    }
    h[j] = __floats2bfloat162_rn(f.x, f.y);
  }
  return v;
}

// Grid (blocks, images): each block walks rounds of kGnThreads * kGnLoads vectors of image
// blockIdx.y. The image's per-channel affine (scale = rstd * gamma, shift = beta - mean *
// scale) and bias are set up in shared memory first. When vpp divides kGnThreads (the VQ
// decoders' 128 / 256 / 512 channels) a thread's 8 channels never change and live in registers.
template <bool kFixedChannels>
__global__ void __launch_bounds__(kGnThreads) group_norm_apply_kernel(const uint4* __restrict__ x,
                                                                      const nv_bf16* __restrict__ bias,
                                                                      const float* __restrict__ stats,
                                                                      const float* __restrict__ gamma,
                                                                      const float* __restrict__ beta, bool swish,
                                                                      int vectors, int channels, int groups,
                                                                      uint4* __restrict__ out) {
  extern __shared__ float coef[];  // [channels] scale, [channels] shift, [channels] bias
  const float* st = stats + static_cast<int64_t>(blockIdx.y) * groups * 2;
  const int per_group = channels / groups, vpp = channels / 8;
  for (int c = threadIdx.x; c < channels; c += blockDim.x) {
    const int g = c / per_group;
    const float scale = st[2 * g + 1] * gamma[c];
    coef[c] = scale;
    coef[channels + c] = beta[c] - st[2 * g] * scale;
    coef[2 * channels + c] = bias ? __bfloat162float(bias[c]) : 0.0f;
  }
  __syncthreads();
  float scale[8], shift[8], add[8];
  if (kFixedChannels) {
    const int c0 = (threadIdx.x % vpp) * 8;
    for (int j = 0; j < 8; ++j) {
      scale[j] = coef[c0 + j];
      shift[j] = coef[channels + c0 + j];
      add[j] = coef[2 * channels + c0 + j];
    }
  }
  const uint4* in = x + static_cast<int64_t>(blockIdx.y) * vectors;
  uint4* o = out + static_cast<int64_t>(blockIdx.y) * vectors;
  for (int first = blockIdx.x * (kGnThreads * kGnLoads) + threadIdx.x; first < vectors;
       first += gridDim.x * (kGnThreads * kGnLoads)) {
    uint4 v[kGnLoads];
#pragma unroll
    for (int k = 0; k < kGnLoads; ++k)
      v[k] = first + k * kGnThreads < vectors ? in[first + k * kGnThreads] : make_uint4(0, 0, 0, 0);
#pragma unroll
    for (int k = 0; k < kGnLoads; ++k) {
      const int i = first + k * kGnThreads;
      if (i >= vectors) continue;
      if (kFixedChannels) {
        o[i] = gn_apply8(v[k], scale, shift, bias ? add : nullptr, swish);
      } else {
        const int c0 = (i % vpp) * 8;
        o[i] = gn_apply8(v[k], coef + c0, coef + channels + c0, bias ? coef + 2 * channels + c0 : nullptr, swish);
      }
    }
  }
}

// Pixels per statistics block: whole load rounds, about kGnBlocksPerImage blocks per image.
int64_t gn_chunk(int64_t pixels, int64_t channels) {
  const int64_t step = (kGnThreads / (channels / 8)) * kGnLoads;
  const int64_t want = (pixels + kGnBlocksPerImage - 1) / kGnBlocksPerImage;
  return std::max<int64_t>(step, (want + step - 1) / step * step);
}

}  // namespace

size_t group_norm_workspace_floats(int64_t n, int64_t pixels, int64_t channels, int64_t groups) {
  if (n <= 0 || pixels <= 0 || channels <= 0 || groups <= 0 || channels % 8 || channels / 8 > kGnThreads) return 0;
  const int64_t chunk = gn_chunk(pixels, channels);
  return static_cast<size_t>(n * ((pixels + chunk - 1) / chunk) * groups * 2);
}

Status group_norm_stats(bf16* x, const bf16* bias, bool fold, int64_t n, int64_t pixels, int64_t channels,
                        int64_t groups, float eps, float* workspace, float* stats, Stream stream) {
  if (!x || !workspace || !stats || n <= 0 || pixels <= 0 || channels <= 0 || groups <= 0 || channels % groups)
    return Status::kInvalidArgument;
  if (channels % 8 || channels / 8 > kGnThreads || pixels * channels > INT32_MAX) return Status::kUnsupported;
  const int64_t chunk = gn_chunk(pixels, channels), blocks = (pixels + chunk - 1) / chunk;
  group_norm_partial_kernel<<<dim3(static_cast<unsigned>(blocks), static_cast<unsigned>(n)), kGnThreads, 0, stream>>>(
      as_nv(x), as_nv(bias), fold, static_cast<int>(pixels), static_cast<int>(channels), static_cast<int>(groups),
      static_cast<int>(chunk), workspace);
  if (cudaPeekAtLastError() != cudaSuccess) return Status::kDeviceError;
  const double count = static_cast<double>(pixels) * static_cast<double>(channels / groups);
  group_norm_finalize_kernel<<<static_cast<unsigned>(n), 256, 0, stream>>>(workspace, static_cast<int>(blocks),
                                                                           static_cast<int>(groups), count, eps, stats);
  return launched();
}

Status group_norm_apply(const bf16* x, const bf16* bias, const float* stats, const float* gamma, const float* beta,
                        bool swish, int64_t n, int64_t pixels, int64_t channels, int64_t groups, bf16* out,
                        Stream stream) {
  if (!x || !stats || !gamma || !beta || !out || n <= 0 || pixels <= 0 || channels <= 0 || groups <= 0 ||
      channels % groups)
    return Status::kInvalidArgument;
  if (channels % 8 || channels > 2048 || pixels * channels > INT32_MAX) return Status::kUnsupported;
  const int64_t vectors = pixels * channels / 8, per_block = kGnThreads * kGnLoads;
  const int64_t fill = (132 * 2048 / kGnThreads + n - 1) / n;  // blocks per image for a full GPU
  const dim3 grid(static_cast<unsigned>(std::min((vectors + per_block - 1) / per_block, fill)),
                  static_cast<unsigned>(n));
  auto kernel = kGnThreads % (channels / 8) == 0 ? group_norm_apply_kernel<true> : group_norm_apply_kernel<false>;
  kernel<<<grid, kGnThreads, 3 * channels * sizeof(float), stream>>>(
      reinterpret_cast<const uint4*>(x), as_nv(bias), stats, gamma, beta, swish, static_cast<int>(vectors),
      static_cast<int>(channels), static_cast<int>(groups), reinterpret_cast<uint4*>(out));
  return launched();
}

namespace {
template <typename OutT>
Status layer_norm_as(const float* x, int64_t ldx, const int32_t* row_index, const float* gamma, const float* beta,
                     float eps, OutT* out, int64_t ldo, int64_t num_rows, int64_t dim, Stream stream) {
  if (!x || !gamma || !beta || !out || num_rows < 0 || dim <= 0 || ldx < dim || ldo < dim)
    return Status::kInvalidArgument;
  if (num_rows == 0) return Status::kOk;
  const auto aligned16 = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  const size_t store = sizeof(OutT) == 2 ? 4 : 16;  // store4's access: two bf16 pairs or one float4
  const bool vec = dim % 4 == 0 && ldx % 4 == 0 && ldo * sizeof(OutT) % store == 0 && aligned16(x) &&
                   aligned16(gamma) && aligned16(beta) && reinterpret_cast<uintptr_t>(out) % store == 0;
  const unsigned blocks = static_cast<unsigned>((num_rows + 7) / 8);  // 8 rows (warps) per block
  if (vec && dim <= 128 * 4)
    return launch_dependent(layer_norm_warp_kernel<4, OutT>, blocks, 256, 0, stream, x, ldx, row_index, gamma, beta,
                            eps, out, ldo, num_rows, dim);
  if (vec && dim <= 128 * 8)
    return launch_dependent(layer_norm_warp_kernel<8, OutT>, blocks, 256, 0, stream, x, ldx, row_index, gamma, beta,
                            eps, out, ldo, num_rows, dim);
  if (vec && dim <= 128 * 16)
    return launch_dependent(layer_norm_warp_kernel<16, OutT>, blocks, 256, 0, stream, x, ldx, row_index, gamma, beta,
                            eps, out, ldo, num_rows, dim);
  layer_norm_kernel<OutT><<<static_cast<unsigned>(num_rows), 256, 0, stream>>>(x, ldx, row_index, gamma, beta, eps,
                                                                               out, ldo, dim);
  return launched();
}
}  // namespace

Status layer_norm(const float* x, int64_t ldx, const int32_t* row_index, const float* gamma, const float* beta,
                  float eps, bf16* out, int64_t ldo, int64_t num_rows, int64_t dim, Stream stream) {
  return layer_norm_as(x, ldx, row_index, gamma, beta, eps, as_nv(out), ldo, num_rows, dim, stream);
}

Status layer_norm(const float* x, int64_t ldx, const int32_t* row_index, const float* gamma, const float* beta,
                  float eps, float* out, int64_t ldo, int64_t num_rows, int64_t dim, Stream stream) {
  return layer_norm_as(x, ldx, row_index, gamma, beta, eps, out, ldo, num_rows, dim, stream);
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

Status gelu_erf(float* x, int64_t n, Stream stream) {
  if (!x || n < 0) return Status::kInvalidArgument;
  if (n == 0) return Status::kOk;
  gelu_kernel<<<grid_stride_blocks(n, 132 * 16), 256, 0, stream>>>(x, n);
  return launched();
}

}  // namespace lpd::kernels::cuda
