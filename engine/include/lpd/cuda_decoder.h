// The LPD transformer on the GPU: bf16 weights, activations and paged KV cache on the device
// (or all float32: the float32 mode, which checks the GPU path against the CPU's tokens), the
// ragged-batch step of lpd/transformer.h with on-device guidance + sampling, and CUDA graphs.
//
// run() enqueues one whole step on the decoder's stream and returns without waiting: the plan
// (ids, slots, visible lengths, block tables, attention tiles, sampling jobs) goes up in one
// copy from pinned memory, then the step runs, eagerly the first time a step shape is seen
// (cuBLASLt plans are made then) and as a replayed CUDA graph afterwards. Sampled tokens land
// in a device token arena that later steps' embeddings read through negative embed ids
// (lpd/kernels/embedding.h), so the host never waits inside a generation. Built only with
// LPD_WITH_CUDA; this header needs no CUDA header.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <tuple>
#include <vector>

#include "lpd/bundle.h"
#include "lpd/kernels/sampling.h"
#include "lpd/transformer.h"

namespace lpd {

class CudaStepDecoder {
 public:
  // num_blocks / block_size: the KV pool (same block ids as the runtime's BlockPool).
  // token_arena: int32 token slots the sampling jobs write and negative embed ids read.
  // dtype: kBF16, or kF32 for the float32 mode.
  CudaStepDecoder(const Bundle& bundle, const TransformerConfig& config, int64_t num_blocks, int64_t block_size,
                  int64_t token_arena, bool use_graphs, kernels::cuda::DType dtype);
  ~CudaStepDecoder();
  CudaStepDecoder(const CudaStepDecoder&) = delete;
  CudaStepDecoder& operator=(const CudaStepDecoder&) = delete;

  // Enqueues one step. plan.embed_ids may hold negative ids -(1 + arena index).
  void run(const StepPlan& plan, const std::vector<kernels::cuda::SampleJob>& jobs);
  // Waits, then copies the last step's logits [logit_rows, vocab] (float32).
  void logits_to_host(std::vector<float>& out);
  // Waits, then copies arena[first, first + count).
  void tokens_to_host(int64_t first, int64_t count, int64_t* out);
  // Writes arena[index[i]] = value[i] (host-sampled tokens), stream-ordered.
  void tokens_from_host(const std::vector<int32_t>& index, const std::vector<int32_t>& value);
  void synchronize();
  int64_t weight_bytes() const { return weight_bytes_; }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  int64_t weight_bytes_ = 0;
};

}  // namespace lpd
