// bf16 (or float32) GEMMs through cuBLASLt (lpd/kernels/gemm.h): float32 accumulation, the bias added in
// the epilogue (exact: it is the same float32 add a separate kernel would do), the residual
// add as beta = 1 into a float32 C = D. Row-major c[m, n] = a[m, k] . w[n, k]^T is the
// column-major product D[n, m] = W^T[n, k] . A[k, m], so W is cuBLAS's A with op T.
// Descriptors and the heuristic's algorithm are cached per shape: the first call of a shape
// does the host-side work, later calls (and CUDA graph captures) only enqueue the matmul.
#include <cublasLt.h>

#include <cstdint>
#include <map>
#include <mutex>
#include <tuple>
#include <utility>

#include "common.cuh"
#include "lpd/kernels/gemm.h"

namespace lpd::kernels::cuda {

namespace {
constexpr size_t kWorkspaceBytes = 32u << 20;

struct Plan {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulAlgo_t algo{};
  bool has_bias = false;
};
using Key = std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, bool, bool, bool, bool, int64_t,
                       int64_t, int64_t, int64_t, DType>;
}  // namespace

struct GemmContext {
  cublasLtHandle_t handle = nullptr;
  void* workspace = nullptr;
  std::map<Key, Plan> plans;
  std::mutex mutex;
};

GemmContext* gemm_context_create() {
  auto* ctx = new GemmContext();
  if (cublasLtCreate(&ctx->handle) != CUBLAS_STATUS_SUCCESS ||
      cudaMalloc(&ctx->workspace, kWorkspaceBytes) != cudaSuccess) {
    gemm_context_destroy(ctx);
    return nullptr;
  }
  return ctx;
}

void gemm_context_destroy(GemmContext* ctx) {
  if (!ctx) return;
  for (auto& [key, p] : ctx->plans) {
    cublasLtMatrixLayoutDestroy(p.a);
    cublasLtMatrixLayoutDestroy(p.b);
    cublasLtMatrixLayoutDestroy(p.c);
    cublasLtMatmulDescDestroy(p.op);
  }
  if (ctx->workspace) cudaFree(ctx->workspace);
  if (ctx->handle) cublasLtDestroy(ctx->handle);
  delete ctx;
}

static bool make_plan(GemmContext* ctx, const GemmArgs& g, Plan& p) {
  const cudaDataType_t ctype = g.out_fp32 ? CUDA_R_32F : CUDA_R_16BF;
  const cudaDataType_t abtype = g.dtype == DType::kF32 ? CUDA_R_32F : CUDA_R_16BF;
  // CUBLAS_COMPUTE_32F: float32 products and sums; with float32 operands it never uses TF32.
  if (cublasLtMatmulDescCreate(&p.op, CUBLAS_COMPUTE_32F, CUDA_R_32F) != CUBLAS_STATUS_SUCCESS) return false;
  const cublasOperation_t t = CUBLAS_OP_T, n = CUBLAS_OP_N;
  cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSA, g.w_kn ? &n : &t, sizeof(t));
  cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSB, &n, sizeof(n));
  p.has_bias = g.bias != nullptr;
  if (p.has_bias) {
    const cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_BIAS;
    cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof(epi));
    cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &ctype, sizeof(ctype));
  }
  if (cublasLtMatrixLayoutCreate(&p.a, abtype, g.w_kn ? g.n : g.k, g.w_kn ? g.k : g.n, g.ldw) !=
          CUBLAS_STATUS_SUCCESS ||
      cublasLtMatrixLayoutCreate(&p.b, abtype, g.k, g.m, g.lda) != CUBLAS_STATUS_SUCCESS ||
      cublasLtMatrixLayoutCreate(&p.c, ctype, g.n, g.m, g.ldc) != CUBLAS_STATUS_SUCCESS)
    return false;
  if (g.batch > 1) {
    const int32_t count = static_cast<int32_t>(g.batch);
    const std::pair<cublasLtMatrixLayout_t, int64_t> layouts[] = {{p.a, g.stride_w}, {p.b, g.stride_a}, {p.c, g.stride_c}};
    for (const auto& [layout, stride] : layouts) {
      cublasLtMatrixLayoutSetAttribute(layout, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count, sizeof(count));
      cublasLtMatrixLayoutSetAttribute(layout, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride, sizeof(stride));
    }
  }
  cublasLtMatmulPreference_t pref;
  if (cublasLtMatmulPreferenceCreate(&pref) != CUBLAS_STATUS_SUCCESS) return false;
  const size_t ws = kWorkspaceBytes;
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws));
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  const cublasStatus_t st =
      cublasLtMatmulAlgoGetHeuristic(ctx->handle, p.op, p.a, p.b, p.c, p.c, pref, 1, &result, &found);
  cublasLtMatmulPreferenceDestroy(pref);
  if (st != CUBLAS_STATUS_SUCCESS || found == 0) return false;
  p.algo = result.algo;
  return true;
}

Status gemm(GemmContext* ctx, const GemmArgs& g, Stream stream) {
  if (!ctx || !g.a || !g.w || !g.c || g.m < 0 || g.n <= 0 || g.k <= 0 || g.lda < g.k ||
      g.ldw < (g.w_kn ? g.n : g.k) || g.ldc < g.n || g.batch < 1 || g.batch > INT32_MAX ||
      (g.dtype == DType::kF32 && !g.out_fp32))
    return Status::kInvalidArgument;
  if (g.m == 0) return Status::kOk;
  // One lock for the whole call: the plan's descriptor carries the bias pointer of this call.
  std::lock_guard<std::mutex> lock(ctx->mutex);
  const Key key{g.m,        g.n,   g.k,        g.lda,      g.ldw,     g.ldc,      g.out_fp32,
                g.accumulate, g.bias != nullptr, g.w_kn, g.batch, g.stride_a, g.stride_w, g.stride_c, g.dtype};
  auto it = ctx->plans.find(key);
  if (it == ctx->plans.end()) {
    Plan p;
    if (!make_plan(ctx, g, p)) {
      if (p.a) cublasLtMatrixLayoutDestroy(p.a);
      if (p.b) cublasLtMatrixLayoutDestroy(p.b);
      if (p.c) cublasLtMatrixLayoutDestroy(p.c);
      if (p.op) cublasLtMatmulDescDestroy(p.op);
      return Status::kUnsupported;
    }
    it = ctx->plans.emplace(key, p).first;
  }
  Plan* plan = &it->second;
  if (plan->has_bias)
    cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &g.bias, sizeof(g.bias));
  const float alpha = 1.0f, beta = g.accumulate ? 1.0f : 0.0f;
  const cublasStatus_t st = cublasLtMatmul(ctx->handle, plan->op, &alpha, g.w, plan->a, g.a, plan->b, &beta, g.c,
                                           plan->c, g.c, plan->c, &plan->algo, ctx->workspace, kWorkspaceBytes, stream);
  return st == CUBLAS_STATUS_SUCCESS ? Status::kOk : Status::kDeviceError;
}

}  // namespace lpd::kernels::cuda
