// The request-level runtime: continuous batching of LPD generations over one paged KV pool.
//
//   lpd::Engine engine("bundle/", opts);
//   int64_t id = engine.submit(spec);      // validated here; typed lpd::Error on bad input
//   while (engine.step() > 0) {}           // every active request advances one of its own steps
//   lpd::RequestResult r = engine.take(id);
//
// step() first admits queued requests in FIFO order while the pool has the blocks they need
// (every sequence's N + 1 slots, reserved up front), then runs ONE ragged step over the rows of
// every running request, whatever their step index, schedule, guidance and sampling settings,
// samples each request's tokens with its own parameters and the shared Philox stream, and
// finishes requests that ran their last step (blocks back to the pool, VQ decode if asked).
// A request's tokens do not depend on what it is batched with (see lpd/kernels/gemm.h).
// All public methods are serialised by an internal mutex.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "lpd/bundle.h"
#include "lpd/kv_pool.h"
#include "lpd/schedule_file.h"
#include "lpd/transformer.h"
#include "lpd/vq_decoder.h"

namespace lpd {

enum class CfgSchedule : int { kLinear = 0, kConstant = 1 };

struct SamplingSettings {
  double cfg = 1.0;  // 1: no guidance (no unconditional sequence)
  CfgSchedule cfg_schedule = CfgSchedule::kLinear;
  double temperature = 1.0;
  int64_t top_k = 0;   // 0: off
  double top_p = 1.0;  // 1: off
  uint64_t seed = 0;
  bool guided() const { return cfg != 1.0; }
};

struct RequestSpec {
  std::vector<int64_t> labels;       // [batch] class ids
  std::vector<int64_t> group_sizes;  // [num_steps], positive, sum num_tokens
  std::vector<int64_t> orders;       // [batch * num_tokens] (or [num_tokens], shared) permutations
  SamplingSettings sampling;
  // RNG image index of labels[0]: image b samples from the stream (seed, first_image + b), so a
  // batch split into several requests gives the images the whole batch gives (docs/rng.md).
  uint32_t first_image = 0;
  bool decode_pixels = true;
};

enum class RequestState : int { kQueued = 0, kRunning = 1, kDone = 2 };

struct RequestResult {
  int64_t batch = 0, num_tokens = 0, height = 0, width = 0;
  std::vector<int64_t> tokens;  // [batch, num_tokens] raster order
  std::vector<uint8_t> pixels;  // [batch, height, width, 3] (empty unless decode_pixels)
};

struct EngineOptions {
  int64_t kv_pool_bytes = 0;   // KV pool size in bytes (K and V, all layers, in the precision) ...
  int64_t kv_pool_blocks = 0;  // ... or in blocks; both 0: 8 guided images (cuda: 64 at 256 px, 16 at 512)
  int64_t block_size = 16;     // slots per block
  int num_threads = 0;         // CPU kernel threads; 0 = all
  bool verify_hashes = true;   // check the manifest's sha256 of every bundle file
  std::string device = "cpu";  // "cpu" (float32) or "cuda" (bf16 on the GPU; needs a CUDA build)
  // "" (the device's own: "fp32" on cpu, "bf16" on cuda), "bf16" (cuda only) or "fp32": cuda in
  // float32 (weights, activations, KV cache) computes the CPU path's tokens, at GPU speed for
  // small models; the VQ decoder stays bf16 (its pixels are within one level of float64).
  std::string precision;
  bool cuda_graphs = true;     // cuda: replay each step shape as a CUDA graph after its first run
  int64_t vq_activation_bytes = int64_t{1} << 30;  // cuda: VQ decoder buffers (images go in chunks)
};

class CudaStepDecoder;
class CudaVqDecoder;

class Engine {
 public:
  Engine(const std::string& bundle_dir, const EngineOptions& options);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  const TransformerConfig& config() const { return weights_.config; }
  int64_t image_size() const { return image_size_; }
  int64_t num_blocks() const { return cache_->pool().num_blocks(); }
  int64_t block_size() const { return cache_->block_size(); }
  int64_t free_blocks() const;
  // Blocks the queued (not yet admitted) requests will take, in FIFO order ahead of a new one.
  int64_t queued_blocks() const;
  // KV blocks a request of `batch` images needs (guided: two sequences per image).
  int64_t blocks_for(int64_t batch, bool guided) const;
  // Bytes of one KV block (K and V of every layer) in the precision: float32, or bf16.
  int64_t block_bytes() const { return block_bytes_for(block_size()); }

  // Validates (Error kInvalidLabel / kInvalidSampling / kInvalidSchedule / kTooLarge) and queues.
  int64_t submit(RequestSpec spec);
  // One step of every running request (after FIFO admission). Returns the requests still queued
  // or running afterwards.
  int64_t step();
  RequestState state(int64_t id) const;  // Error kUnknownRequest for an unknown or taken id
  // The result of a finished request (Error kInvalidArgument if it is not done yet). The
  // reference stays valid until release(id) / take(id) / the engine's destruction.
  const RequestResult& result(int64_t id) const;
  // Forgets a request: a finished one's result, or a queued one (removed from the queue).
  // A running request cannot be released (Error kInvalidArgument).
  void release(int64_t id);
  // result() moved out, then release().
  RequestResult take(int64_t id);
  // VQ-decodes raster tokens [batch, num_tokens] to rgb [batch, image_size, image_size, 3].
  // Independent of the request machinery (Error kInvalidArgument on an out-of-range token).
  void decode(const int64_t* tokens, int64_t batch, uint8_t* rgb) const;
  // submit + step until done + take.
  RequestResult generate(RequestSpec spec);
  // The bundle's precomputed schedules and default guidance (lpd/schedule_file.h): a request by
  // step count takes its group sizes and orders from here, exactly as lpd_engine.Generator does.
  const BundleSchedules& schedules() const { return *schedules_; }
  const std::string& device() const { return device_; }
  const std::string& precision() const { return precision_; }  // "fp32" or "bf16"

  // The last step's logits [logit rows, vocab] (float32; rows in plan order: per running
  // request, conditional sequences then unconditional ones). For tests; waits on the GPU.
  std::vector<float> last_logits();
  // Whether this build has the CUDA path.
  static bool cuda_available();

 private:
  struct Request;
  Engine(Bundle bundle, const EngineOptions& options);
  void validate(const RequestSpec& spec) const;
  bool try_admit(Request& r);
  void plan_step();
  void sample_step(const float* logits);
  void finish(Request& r);
  void gpu_step();
  int64_t token_base(const Request& r, int64_t b) const;
  int64_t block_bytes_for(int64_t block_size) const;

  TransformerWeights weights_;
  int64_t image_size_;
  std::unique_ptr<VqDecoder> vq_;  // device "cpu": pixels are decoded on the CPU
  std::unique_ptr<BundleSchedules> schedules_;
  std::unique_ptr<KvCache> cache_;
  std::unique_ptr<StepDecoder> decoder_;
  std::unique_ptr<CudaStepDecoder> gpu_;
  std::unique_ptr<CudaVqDecoder> gpu_vq_;  // device "cuda": pixels are decoded on the GPU
  std::string device_;
  std::string precision_;
  mutable std::mutex mutex_;
  int64_t next_id_ = 1;
  std::map<int64_t, std::unique_ptr<Request>> requests_;
  std::deque<int64_t> queue_;
  std::vector<int64_t> running_;
  StepPlan plan_;
  std::vector<float> logits_;
};

}  // namespace lpd
