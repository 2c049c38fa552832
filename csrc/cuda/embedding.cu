// The unified input embedding on the GPU (lpd/kernels/embedding.h): gather a table row (or the
// row of a token sampled on the device, through a negative id), add the position row (both
// bf16 or both float32), LayerNorm in float32. One block per row; the sum is staged in shared memory.
#include "common.cuh"
#include "lpd/kernels/embedding.h"

namespace lpd::kernels::cuda {
namespace {

using namespace detail;

template <typename T>
__global__ void embed_kernel(EmbedParams p) {
  extern __shared__ float row[];
  __shared__ float scratch[33];
  pdl_enter();
  const int64_t r = blockIdx.x;
  int64_t id = p.embed_ids[r];
  if (id < 0) id = p.tokens[-id - 1];
  const T* t = static_cast<const T*>(p.table) + id * p.dim;
  const T* q = static_cast<const T*>(p.pos) + static_cast<int64_t>(p.pos_ids[r]) * p.dim;
  float s = 0.0f;
  for (int64_t i = threadIdx.x; i < p.dim; i += blockDim.x) {
    const float v = to_f32(t[i]) + to_f32(q[i]);
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
  return p.dtype == DType::kF32
             ? launch_dependent(embed_kernel<float>, static_cast<unsigned>(p.num_rows), 256, p.dim * sizeof(float),
                                stream, p)
             : launch_dependent(embed_kernel<nv_bf16>, static_cast<unsigned>(p.num_rows), 256, p.dim * sizeof(float),
                                stream, p);
}

}  // namespace lpd::kernels::cuda
