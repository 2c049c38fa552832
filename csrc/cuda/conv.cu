// The VQ decoder's operators on the GPU (lpd/kernels/conv.h): convolutions through cuDNN's
// convolution API (NHWC bf16, float32 compute on tensor cores), nearest 2x upsampling, the
// codebook row gather, the spatial-attention softmax and the final uint8 conversion. The small
// operators move 16 bytes (8 channels) per thread access.
#include <cudnn.h>

#include <map>
#include <mutex>
#include <tuple>

#include "common.cuh"
#include "lpd/kernels/conv.h"

namespace lpd::kernels::cuda {

namespace {
using namespace detail;

struct ConvPlan {
  cudnnTensorDescriptor_t x = nullptr, y = nullptr;
  cudnnFilterDescriptor_t w = nullptr;
  cudnnConvolutionDescriptor_t conv = nullptr;
  cudnnConvolutionFwdAlgo_t algo{};
  size_t workspace = 0;
};
using ConvKey = std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t, int64_t>;

void destroy_plan(ConvPlan& p) {
  if (p.x) cudnnDestroyTensorDescriptor(p.x);
  if (p.y) cudnnDestroyTensorDescriptor(p.y);
  if (p.w) cudnnDestroyFilterDescriptor(p.w);
  if (p.conv) cudnnDestroyConvolutionDescriptor(p.conv);
}
}  // namespace

struct ConvContext {
  cudnnHandle_t handle = nullptr;
  void* workspace = nullptr;
  size_t workspace_bytes = 0;
  std::map<ConvKey, ConvPlan> plans;
  std::mutex mutex;
};

ConvContext* conv_context_create(size_t workspace_bytes) {
  auto* ctx = new ConvContext();
  ctx->workspace_bytes = workspace_bytes;
  if (cudnnCreate(&ctx->handle) != CUDNN_STATUS_SUCCESS ||
      (workspace_bytes && cudaMalloc(&ctx->workspace, workspace_bytes) != cudaSuccess)) {
    conv_context_destroy(ctx);
    return nullptr;
  }
  return ctx;
}

void conv_context_destroy(ConvContext* ctx) {
  if (!ctx) return;
  for (auto& [key, p] : ctx->plans) destroy_plan(p);
  if (ctx->workspace) cudaFree(ctx->workspace);
  if (ctx->handle) cudnnDestroy(ctx->handle);
  delete ctx;
}

// Descriptors for the shape, then cuDNN's own timing of its algorithms on the caller's buffers
// (output into scratch), keeping the fastest that fits the workspace.
static bool make_conv_plan(ConvContext* ctx, const ConvArgs& a, bf16* out, ConvPlan& p) {
  const int pad = static_cast<int>(a.kernel / 2);
  const auto n = static_cast<int>(a.n), h = static_cast<int>(a.height), w = static_cast<int>(a.width);
  if (cudnnCreateTensorDescriptor(&p.x) != CUDNN_STATUS_SUCCESS ||
      cudnnCreateTensorDescriptor(&p.y) != CUDNN_STATUS_SUCCESS ||
      cudnnCreateFilterDescriptor(&p.w) != CUDNN_STATUS_SUCCESS ||
      cudnnCreateConvolutionDescriptor(&p.conv) != CUDNN_STATUS_SUCCESS ||
      cudnnSetTensor4dDescriptor(p.x, CUDNN_TENSOR_NHWC, CUDNN_DATA_BFLOAT16, n, static_cast<int>(a.c_in), h, w) !=
          CUDNN_STATUS_SUCCESS ||
      cudnnSetTensor4dDescriptor(p.y, CUDNN_TENSOR_NHWC, CUDNN_DATA_BFLOAT16, n, static_cast<int>(a.c_out), h, w) !=
          CUDNN_STATUS_SUCCESS ||
      cudnnSetFilter4dDescriptor(p.w, CUDNN_DATA_BFLOAT16, CUDNN_TENSOR_NHWC, static_cast<int>(a.c_out),
                                 static_cast<int>(a.c_in), static_cast<int>(a.kernel),
                                 static_cast<int>(a.kernel)) != CUDNN_STATUS_SUCCESS ||
      cudnnSetConvolution2dDescriptor(p.conv, pad, pad, 1, 1, 1, 1, CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT) !=
          CUDNN_STATUS_SUCCESS ||
      cudnnSetConvolutionMathType(p.conv, CUDNN_TENSOR_OP_MATH) != CUDNN_STATUS_SUCCESS)
    return false;
  cudnnConvolutionFwdAlgoPerf_t perf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
  int found = 0;
  if (cudnnFindConvolutionForwardAlgorithmEx(ctx->handle, p.x, a.x, p.w, a.w, p.conv, p.y, out,
                                             CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &found, perf, ctx->workspace,
                                             ctx->workspace_bytes) != CUDNN_STATUS_SUCCESS)
    return false;
  for (int i = 0; i < found; ++i) {  // sorted fastest first
    if (perf[i].status == CUDNN_STATUS_SUCCESS && perf[i].memory <= ctx->workspace_bytes) {
      p.algo = perf[i].algo;
      p.workspace = perf[i].memory;
      return true;
    }
  }
  return false;
}

Status conv2d(ConvContext* ctx, const ConvArgs& a, Stream stream) {
  if (!ctx || !a.x || !a.w || !a.y || a.n <= 0 || a.height <= 0 || a.width <= 0 || a.c_in <= 0 || a.c_out <= 0 ||
      (a.kernel != 1 && a.kernel != 3))
    return Status::kInvalidArgument;
  if (a.accumulate && !a.scratch) return Status::kInvalidArgument;
  std::lock_guard<std::mutex> lock(ctx->mutex);  // one handle: its stream and workspace are shared
  if (cudnnSetStream(ctx->handle, stream) != CUDNN_STATUS_SUCCESS) return Status::kDeviceError;
  const ConvKey key{a.n, a.height, a.width, a.c_in, a.c_out, a.kernel};
  auto it = ctx->plans.find(key);
  if (it == ctx->plans.end()) {
    ConvPlan p;
    if (!make_conv_plan(ctx, a, a.scratch ? a.scratch : a.y, p)) {
      destroy_plan(p);
      return Status::kUnsupported;
    }
    it = ctx->plans.emplace(key, p).first;
  }
  const ConvPlan& plan = it->second;
  const float alpha = 1.0f, beta = a.accumulate ? 1.0f : 0.0f;
  const cudnnStatus_t st = cudnnConvolutionForward(ctx->handle, &alpha, plan.x, a.x, plan.w, a.w, plan.conv,
                                                   plan.algo, ctx->workspace, plan.workspace, &beta, plan.y, a.y);
  return st == CUDNN_STATUS_SUCCESS ? Status::kOk : Status::kDeviceError;
}

namespace {

constexpr int64_t kMaxBlocks = 132 * 32;  // grid-stride loops of the small operators

__device__ inline uint4 add_bias8(uint4 v, const nv_bf16* bias, int64_t c0) {
  if (!bias) return v;
  nv_bf16* e = reinterpret_cast<nv_bf16*>(&v);
  for (int j = 0; j < 8; ++j) e[j] = __float2bfloat16(__bfloat162float(e[j]) + __bfloat162float(bias[c0 + j]));
  return v;
}

__global__ void upsample_kernel(const uint4* __restrict__ x, const nv_bf16* __restrict__ bias, int64_t n,
                                int64_t h, int64_t w, int64_t vpp, uint4* __restrict__ out) {
  const int64_t total = n * 4 * h * w * vpp;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t v = i % vpp, ox = (i / vpp) % (2 * w), oy = (i / (vpp * 2 * w)) % (2 * h),
                  img = i / (vpp * 4 * h * w);
    out[i] = add_bias8(x[((img * h + oy / 2) * w + ox / 2) * vpp + v], bias, v * 8);
  }
}

__global__ void gather_kernel(const uint4* __restrict__ table, const int32_t* __restrict__ ids, int64_t rows,
                              int64_t vpr, uint4* __restrict__ out) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < rows * vpr;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    out[i] = table[static_cast<int64_t>(ids[i / vpr]) * vpr + i % vpr];
}

// One warp per row.
__global__ void softmax_kernel(const float* __restrict__ s, int64_t rows, int64_t cols, float scale,
                               nv_bf16* __restrict__ p) {
  const int64_t r = blockIdx.x * static_cast<int64_t>(blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x & 31;
  if (r >= rows) return;
  const float* row = s + r * cols;
  float m = -INFINITY;
  for (int64_t j = lane; j < cols; j += 32) m = fmaxf(m, row[j] * scale);
  for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
  float sum = 0.0f;
  for (int64_t j = lane; j < cols; j += 32) sum += __expf(row[j] * scale - m);
  for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
  const float inv = 1.0f / sum;
  for (int64_t j = lane; j < cols; j += 32) p[r * cols + j] = __float2bfloat16(__expf(row[j] * scale - m) * inv);
}

__global__ void to_rgb_kernel(const nv_bf16* __restrict__ x, int64_t ldx, const nv_bf16* __restrict__ bias,
                              int64_t pixels, uint8_t* __restrict__ rgb) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < pixels * 3;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t c = i % 3;
    // Same float32 operations, same order, no contraction, as the CPU decoder.
    const float v = __fadd_rn(__bfloat162float(x[(i / 3) * ldx + c]), bias ? __bfloat162float(bias[c]) : 0.0f);
    const float f = __fmul_rn(__fdiv_rn(__fadd_rn(v, 1.0f), 2.0f), 255.0f);
    rgb[i] = static_cast<uint8_t>(__float2int_rn(fminf(fmaxf(f, 0.0f), 255.0f)));
  }
}

}  // namespace

Status upsample_nearest2x(const bf16* x, const bf16* bias, int64_t n, int64_t height, int64_t width,
                          int64_t channels, bf16* out, Stream stream) {
  if (!x || !out || n <= 0 || height <= 0 || width <= 0 || channels <= 0) return Status::kInvalidArgument;
  if (channels % 8) return Status::kUnsupported;
  const int64_t vpp = channels / 8;
  upsample_kernel<<<grid_stride_blocks(n * 4 * height * width * vpp, kMaxBlocks), 256, 0, stream>>>(
      reinterpret_cast<const uint4*>(x), as_nv(bias), n, height, width, vpp, reinterpret_cast<uint4*>(out));
  return launched();
}

Status gather_rows(const bf16* table, const int32_t* ids, int64_t rows, int64_t width, bf16* out, Stream stream) {
  if (!table || !ids || !out || rows < 0 || width <= 0) return Status::kInvalidArgument;
  if (width % 8) return Status::kUnsupported;
  if (rows == 0) return Status::kOk;
  gather_kernel<<<grid_stride_blocks(rows * width / 8, kMaxBlocks), 256, 0, stream>>>(reinterpret_cast<const uint4*>(table), ids, rows,
                                                                 width / 8, reinterpret_cast<uint4*>(out));
  return launched();
}

Status softmax_rows(const float* s, int64_t rows, int64_t cols, float scale, bf16* p, Stream stream) {
  if (!s || !p || rows < 0 || cols <= 0) return Status::kInvalidArgument;
  if (rows == 0) return Status::kOk;
  softmax_kernel<<<static_cast<unsigned>((rows + 7) / 8), 256, 0, stream>>>(s, rows, cols, scale, as_nv(p));
  return launched();
}

Status to_rgb(const bf16* x, int64_t ldx, const bf16* bias, int64_t num_pixels, uint8_t* rgb, Stream stream) {
  if (!x || !rgb || ldx < 3 || num_pixels < 0) return Status::kInvalidArgument;
  if (num_pixels == 0) return Status::kOk;
  to_rgb_kernel<<<grid_stride_blocks(num_pixels * 3, kMaxBlocks), 256, 0, stream>>>(as_nv(x), ldx, as_nv(bias), num_pixels, rgb);
  return launched();
}

}  // namespace lpd::kernels::cuda
