// The unified input embedding on the GPU (lpd/kernels/embedding.h): gather a bf16 table row
// (or the row of a token sampled on the device, through a negative id), add the bf16 position
// row, LayerNorm in float32. One block per row; the sum is staged in shared memory.
#include "common.cuh"
#include "lpd/kernels/embedding.h"

namespace lpd::kernels::cuda {
namespace {

using namespace detail;

__global__ void embed_kernel(EmbedParams p) {
  extern __shared__ float row[];
  __shared__ float scratch[33];
  pdl_enter();
  const int64_t r = blockIdx.x;
  int64_t id = p.embed_ids[r];
  if (id < 0) id = p.tokens[-id - 1];
  const nv_bf16* t = as_nv(p.table) + id * p.dim;
  const nv_bf16* q = as_nv(p.pos) + static_cast<int64_t>(p.pos_ids[r]) * p.dim;
  float s = 0.0f;
  for (int64_t i = threadIdx.x; i < p.dim; i += blockDim.x) {
    const float v = __bfloat162float(t[i]) + __bfloat162float(q[i]);
    row[i] = v;
    s += v;
  }
  const float mean = block_sum(s, scratch) / static_cast<float>(p.dim);
  float sq = 0.0f;
  for (int64_t i = threadIdx.x; i < p.dim; i += blockDim.x) {
    const float d = row[i] - mean;
    sq += d * d;
  }
  const float rstd = rsqrtf(block_sum(sq, scratch) / static_cast<float>(p.dim) + p.eps);
  float* o = p.out + r * p.dim;
  for (int64_t i = threadIdx.x; i < p.dim; i += blockDim.x) o[i] = (row[i] - mean) * rstd * p.gamma[i] + p.beta[i];
}

}  // namespace

Status embed_rows(const EmbedParams& p, Stream stream) {
  if (!p.table || !p.pos || !p.gamma || !p.beta || !p.embed_ids || !p.pos_ids || !p.out || p.num_rows < 0 ||
      p.dim <= 0)
    return Status::kInvalidArgument;
  if (p.dim > 12288) return Status::kUnsupported;
  if (p.num_rows == 0) return Status::kOk;
  return launch_dependent(embed_kernel, static_cast<unsigned>(p.num_rows), 256, p.dim * sizeof(float), stream, p);
}

}  // namespace lpd::kernels::cuda
