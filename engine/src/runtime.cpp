// Continuous batching over the paged KV pool (lpd/runtime.h).
//
// Sequence layout of a request of B images: sequences 0..B-1 are the conditional ones, B..2B-1
// the unconditional ones (guidance only), as in python/lpd_engine/driver.py. Slots: c[0] = 0,
// c[1] = 1, c[k+2] = 1 + g[0] + ... + g[k]; step k feeds context slots c[k]..c[k+1]-1 and query
// slots c[k+1]..c[k+2]-1; context rows see c[k+1] slots, query rows c[k+2].
#include "lpd/runtime.h"

#include <algorithm>
#include <cmath>

#include "lpd/errors.h"
#include "lpd/kernels/common.h"
#include "lpd/kernels/sampling.h"
#include "lpd/rng.h"
#include "lpd/schedule.h"
#ifdef LPD_WITH_CUDA
#include "lpd/cuda_decoder.h"
#include "lpd/cuda_vq_decoder.h"
#else
namespace lpd {
class CudaStepDecoder {};  // never constructed without the CUDA path
class CudaVqDecoder {};
}  // namespace lpd
#endif

namespace lpd {

struct Engine::Request {
  int64_t id = 0;
  RequestSpec spec;
  int64_t batch = 0, num_seqs = 0, step = 0;
  std::vector<int64_t> c;  // slot bounds [num_steps + 2]
  std::vector<std::vector<int32_t>> block_tables;  // [num_seqs]
  std::vector<int64_t> generated;  // [batch, num_tokens] in generation order
  std::vector<int64_t> logit_offset;  // first logits row of each sequence in this step
  RequestState state = RequestState::kQueued;
  RequestResult result;
  int64_t order(int64_t b, int64_t t, int64_t n) const {
    return spec.orders.size() == static_cast<size_t>(n) ? spec.orders[t] : spec.orders[b * n + t];
  }
};

// Room for 8 guided images on the CPU; on the GPU as many blocks as 64 guided 256-px images
// take (a throughput batch; 16 guided 512-px images), so the default memory does not grow
// fourfold with the resolution.
static int64_t default_blocks(const TransformerConfig& c, int64_t block_size, bool gpu) {
  if (gpu) return 128 * ((256 + 1 + block_size - 1) / block_size);
  return 16 * ((c.num_tokens + 1 + block_size - 1) / block_size);
}

Engine::Engine(const std::string& bundle_dir, const EngineOptions& options)
    : Engine(open_bundle(bundle_dir, options.verify_hashes), options) {}

bool Engine::cuda_available() {
#ifdef LPD_WITH_CUDA
  return true;
#else
  return false;
#endif
}

Engine::Engine(Bundle bundle, const EngineOptions& options)
    : weights_(TransformerWeights::load(bundle, options.device != "cuda")),
      image_size_(weights_.config.grid() * bundle.vq.downsample()),
      device_(options.device),
      precision_(options.precision.empty() ? (options.device == "cuda" ? "bf16" : "fp32") : options.precision) {
  if (device_ != "cpu" && device_ != "cuda")
    fail(ErrorKind::kInvalidArgument, "device must be \"cpu\" or \"cuda\", got \"" + device_ + "\"");
  if (precision_ != "fp32" && (precision_ != "bf16" || device_ != "cuda"))
    fail(ErrorKind::kInvalidArgument, "precision must be \"fp32\"" + std::string(device_ == "cuda" ? " or \"bf16\"" : "") +
                                          " on device \"" + device_ + "\", got \"" + precision_ + "\"");
  if (device_ == "cuda" && !cuda_available())
    fail(ErrorKind::kInvalidArgument, "device \"cuda\": this build of lpd_engine has no CUDA path");
  if (options.block_size <= 0 || options.block_size > 4096)
    fail(ErrorKind::kInvalidArgument, "block_size must be in [1, 4096]");
  if (options.kv_pool_bytes < 0 || options.kv_pool_blocks < 0)
    fail(ErrorKind::kInvalidArgument, "KV pool size must be >= 0");
  if (options.num_threads > 0) kernels::set_num_threads(options.num_threads);
  schedules_ = std::make_unique<BundleSchedules>(bundle.dir, bundle.manifest, weights_.config.num_tokens,
                                                 options.verify_hashes);
  const TransformerConfig& c = weights_.config;
  const size_t block_bytes = static_cast<size_t>(block_bytes_for(options.block_size));
  int64_t blocks = options.kv_pool_blocks;
  if (!blocks && options.kv_pool_bytes) blocks = options.kv_pool_bytes / static_cast<int64_t>(block_bytes);
  if (!blocks && !options.kv_pool_bytes) blocks = default_blocks(c, options.block_size, device_ == "cuda");
  if (blocks <= 0)
    fail(ErrorKind::kInvalidArgument, "KV pool of " + std::to_string(options.kv_pool_bytes) +
                                          " bytes holds no block (one block is " + std::to_string(block_bytes) + ")");
  cache_ = std::make_unique<KvCache>(c.depth, blocks, options.block_size, c.dim, device_ == "cpu");
  if (device_ == "cpu") {
    decoder_ = std::make_unique<StepDecoder>(weights_, *cache_);
    vq_ = std::make_unique<VqDecoder>(VqDecoder::load(bundle));
  } else {
#ifdef LPD_WITH_CUDA
    // Token arena: num_tokens ints per block id; an image's tokens live at its conditional
    // sequence's first block (unique while the request runs).
    gpu_ = std::make_unique<CudaStepDecoder>(bundle, c, blocks, options.block_size, blocks * c.num_tokens,
                                             options.cuda_graphs,
                                             precision_ == "fp32" ? kernels::cuda::DType::kF32 : kernels::cuda::DType::kBF16);
    if (options.vq_activation_bytes <= 0) fail(ErrorKind::kInvalidArgument, "vq_activation_bytes must be > 0");
    gpu_vq_ = std::make_unique<CudaVqDecoder>(bundle, c.grid(), static_cast<size_t>(options.vq_activation_bytes));
#endif
  }
}

int64_t Engine::block_bytes_for(int64_t block_size) const {
  return static_cast<int64_t>(KvCache::bytes_for(weights_.config.depth, 1, block_size, weights_.config.dim,
                                                 precision_ == "bf16" ? sizeof(uint16_t) : sizeof(float)));
}

int64_t Engine::token_base(const Request& r, int64_t b) const {
  return static_cast<int64_t>(r.block_tables[static_cast<size_t>(b)][0]) * weights_.config.num_tokens;
}

Engine::~Engine() = default;

int64_t Engine::free_blocks() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return cache_->pool().num_free();
}

int64_t Engine::queued_blocks() const {
  std::lock_guard<std::mutex> lock(mutex_);
  int64_t total = 0;
  for (int64_t id : queue_) {
    const Request& r = *requests_.at(id);
    total += blocks_for(r.batch, r.spec.sampling.guided());
  }
  return total;
}

int64_t Engine::blocks_for(int64_t batch, bool guided) const {
  return batch * (guided ? 2 : 1) * cache_->blocks_for_slots(weights_.config.num_tokens + 1);
}

void Engine::validate(const RequestSpec& spec) const {
  const TransformerConfig& c = weights_.config;
  if (spec.labels.empty()) fail(ErrorKind::kInvalidLabel, "labels must not be empty");
  for (int64_t y : spec.labels)
    if (y < 0 || y >= c.num_classes)
      fail(ErrorKind::kInvalidLabel, "label " + std::to_string(y) + " not in [0, " + std::to_string(c.num_classes) + ")");
  const SamplingSettings& s = spec.sampling;
  if (!std::isfinite(s.cfg) || s.cfg < 0) fail(ErrorKind::kInvalidSampling, "cfg must be a finite number >= 0");
  if (s.cfg_schedule != CfgSchedule::kLinear && s.cfg_schedule != CfgSchedule::kConstant)
    fail(ErrorKind::kInvalidSampling, "cfg_schedule must be linear or constant");
  if (!std::isfinite(s.temperature) || s.temperature < 0)
    fail(ErrorKind::kInvalidSampling, "temperature must be a finite number >= 0");
  if (s.top_k < 0) fail(ErrorKind::kInvalidSampling, "top_k must be >= 0 (0 = off)");
  if (!(s.top_p > 0.0 && s.top_p <= 1.0)) fail(ErrorKind::kInvalidSampling, "top_p must be in (0, 1] (1 = off)");
  if (static_cast<uint64_t>(spec.first_image) + spec.labels.size() > (uint64_t{1} << 32))
    fail(ErrorKind::kInvalidArgument, "first_image + batch must not exceed 2^32");
  const int64_t n = c.num_tokens;
  try {
    if (spec.group_sizes.empty()) throw ScheduleError("group_sizes must not be empty (explicit group sizes required)");
    validate_group_sizes(spec.group_sizes.data(), spec.group_sizes.size(), n);
    const size_t batch = spec.labels.size();
    if (spec.orders.size() != static_cast<size_t>(n) && spec.orders.size() != batch * static_cast<size_t>(n))
      throw ScheduleError("orders must hold num_tokens (" + std::to_string(n) + ") or batch * num_tokens entries, got " +
                          std::to_string(spec.orders.size()));
    for (size_t i = 0; i < spec.orders.size(); i += static_cast<size_t>(n)) validate_order(spec.orders.data() + i, n);
  } catch (const ScheduleError& e) {
    fail(ErrorKind::kInvalidSchedule, e.what());
  }
}

int64_t Engine::submit(RequestSpec spec) {
  validate(spec);
  std::lock_guard<std::mutex> lock(mutex_);
  const int64_t batch = static_cast<int64_t>(spec.labels.size());
  const int64_t need = blocks_for(batch, spec.sampling.guided());
  if (need > cache_->pool().num_blocks())
    fail(ErrorKind::kTooLarge, "request needs " + std::to_string(need) + " KV blocks, the whole pool has " +
                                   std::to_string(cache_->pool().num_blocks()));
  auto r = std::make_unique<Request>();
  r->id = next_id_++;
  r->batch = batch;
  r->num_seqs = spec.sampling.guided() ? 2 * batch : batch;
  r->c = {0, 1};
  for (int64_t g : spec.group_sizes) r->c.push_back(r->c.back() + g);
  r->generated.assign(static_cast<size_t>(batch * weights_.config.num_tokens), 0);
  r->spec = std::move(spec);
  const int64_t id = r->id;
  requests_[id] = std::move(r);
  queue_.push_back(id);
  return id;
}

bool Engine::try_admit(Request& r) {
  const int64_t per_seq = cache_->blocks_for_slots(weights_.config.num_tokens + 1);
  if (cache_->pool().num_free() < per_seq * r.num_seqs) return false;
  for (int64_t s = 0; s < r.num_seqs; ++s) r.block_tables.push_back(cache_->pool().allocate(per_seq));
  r.state = RequestState::kRunning;
  return true;
}

void Engine::plan_step() {
  const TransformerConfig& c = weights_.config;
  const int64_t n = c.num_tokens, bs = cache_->block_size();
  plan_.clear();
  plan_.max_blocks = cache_->blocks_for_slots(n + 1);
  int64_t seq_index = 0;
  for (int64_t id : running_) {
    Request& r = *requests_[id];
    const int64_t k = r.step;
    const int64_t c0 = r.c[k], c1 = r.c[k + 1], c2 = r.c[k + 2];
    r.logit_offset.assign(static_cast<size_t>(r.num_seqs), 0);
    for (int64_t s = 0; s < r.num_seqs; ++s, ++seq_index) {
      const int64_t b = s % r.batch;
      const bool uncond = s >= r.batch;
      const auto& table = r.block_tables[static_cast<size_t>(s)];
      plan_.block_tables.insert(plan_.block_tables.end(), table.begin(), table.end());
      r.logit_offset[static_cast<size_t>(s)] = static_cast<int64_t>(plan_.logit_rows.size());
      for (int64_t slot = c0; slot < c2; ++slot) {
        const bool context = slot < c1;
        int64_t embed;
        if (!context) embed = c.mask_index();
        else if (slot == 0) embed = uncond ? c.uncond_index() : c.class_index(r.spec.labels[static_cast<size_t>(b)]);
        else if (gpu_) embed = -(1 + token_base(r, b) + slot - 1);  // sampled on the device
        else embed = r.generated[static_cast<size_t>(b * n + slot - 1)];
        if (!context) plan_.logit_rows.push_back(plan_.num_rows());
        plan_.embed_ids.push_back(embed);
        plan_.pos_ids.push_back(slot == 0 ? 0 : 1 + r.order(b, slot - 1, n));
        plan_.slot_mapping.push_back(static_cast<int64_t>(table[static_cast<size_t>(slot / bs)]) * bs + slot % bs);
        plan_.row_seq.push_back(static_cast<int32_t>(seq_index));
        plan_.row_pos.push_back(static_cast<int32_t>(slot));
        plan_.visible_len.push_back(static_cast<int32_t>(context ? c1 : c2));
      }
    }
  }
}

void Engine::sample_step(const float* logits) {
  const TransformerConfig& c = weights_.config;
  const int64_t vocab = c.vocab_size, n = c.num_tokens;
  struct Job {
    Request* r;
    int64_t b, j;
  };
  std::vector<Job> jobs;
  for (int64_t id : running_) {
    Request& r = *requests_[id];
    const int64_t g = r.c[r.step + 2] - r.c[r.step + 1];
    for (int64_t b = 0; b < r.batch; ++b)
      for (int64_t j = 0; j < g; ++j) jobs.push_back({&r, b, j});
  }
  const int64_t num_jobs = static_cast<int64_t>(jobs.size());
  int failed = 0;
#pragma omp parallel if (num_jobs * vocab > 65536)
  {
    std::vector<float> guided(static_cast<size_t>(vocab));
    std::vector<double> uniforms(static_cast<size_t>((vocab + 3) / 4 * 4));
    std::vector<uint64_t> workspace(kernels::sample_workspace_bytes(vocab) / 8 + 1);
#pragma omp for schedule(dynamic, 4)
    for (int64_t i = 0; i < num_jobs; ++i) {
      const Job& job = jobs[static_cast<size_t>(i)];
      Request& r = *job.r;
      const SamplingSettings& s = r.spec.sampling;
      const int64_t t = r.c[r.step + 1] - 1 + job.j;  // generation index
      const float* cond = logits + (r.logit_offset[static_cast<size_t>(job.b)] + job.j) * vocab;
      const float* row = cond;
      if (s.guided()) {
        const float* uncond = logits + (r.logit_offset[static_cast<size_t>(r.batch + job.b)] + job.j) * vocab;
        const double w = s.cfg_schedule == CfgSchedule::kLinear
                             ? 1.0 + (s.cfg - 1.0) * static_cast<double>(t) / static_cast<double>(n)
                             : s.cfg;
        const float wf = static_cast<float>(w);
        kernels::guidance_combine(cond, uncond, &wf, guided.data(), vocab, 1, vocab);
        row = guided.data();
      }
      const kernels::SampleParams sp{s.temperature, s.top_k, s.top_p};
      const bool greedy = s.temperature == 0.0 || s.top_k == 1;
      if (!greedy) {
        for (int64_t blk = 0; blk < (vocab + 3) / 4; ++blk) {
          const auto words = philox4x32(s.seed, static_cast<uint32_t>(blk), static_cast<uint32_t>(t),
                                        static_cast<uint32_t>(r.spec.first_image + job.b), kStreamSampling);
          for (int q = 0; q < 4; ++q) uniforms[static_cast<size_t>(4 * blk + q)] = to_uniform(words[q]);
        }
      }
      int64_t token = 0;
      if (kernels::sample_row(row, vocab, sp, greedy ? nullptr : uniforms.data(), workspace.data(), &token) !=
          kernels::Status::kOk) {
#pragma omp atomic write
        failed = 1;
      }
      r.generated[static_cast<size_t>(job.b * n + t)] = token;
    }
  }
  if (failed) fail(ErrorKind::kInternal, "sampling kernel failed");
}

void Engine::finish(Request& r) {
  const int64_t n = weights_.config.num_tokens;
#ifdef LPD_WITH_CUDA
  if (gpu_)
    for (int64_t b = 0; b < r.batch; ++b) gpu_->tokens_to_host(token_base(r, b), n, r.generated.data() + b * n);
#endif
  for (auto& table : r.block_tables) cache_->pool().release(table);
  r.block_tables.clear();
  RequestResult& out = r.result;
  out.batch = r.batch;
  out.num_tokens = n;
  out.tokens.assign(static_cast<size_t>(r.batch * n), 0);
  for (int64_t b = 0; b < r.batch; ++b)
    for (int64_t t = 0; t < n; ++t) out.tokens[static_cast<size_t>(b * n + r.order(b, t, n))] = r.generated[static_cast<size_t>(b * n + t)];
  r.generated.clear();
  if (r.spec.decode_pixels) {
    const int64_t side = image_size();
    out.height = out.width = side;
    out.pixels.assign(static_cast<size_t>(r.batch * side * side * 3), 0);
    decode(out.tokens.data(), r.batch, out.pixels.data());
  }
  r.state = RequestState::kDone;
}

int64_t Engine::step() {
  std::lock_guard<std::mutex> lock(mutex_);
  while (!queue_.empty()) {
    Request& r = *requests_[queue_.front()];
    if (!try_admit(r)) break;
    running_.push_back(r.id);
    queue_.pop_front();
  }
  if (!running_.empty()) {
    plan_step();
    if (gpu_) {
      gpu_step();
    } else {
      logits_.resize(plan_.logit_rows.size() * static_cast<size_t>(weights_.config.vocab_size));
      decoder_->run(plan_, logits_.data());
      sample_step(logits_.data());
    }
    std::vector<int64_t> still;
    for (int64_t id : running_) {
      Request& r = *requests_[id];
      if (++r.step == static_cast<int64_t>(r.spec.group_sizes.size())) finish(r);
      else still.push_back(id);
    }
    running_.swap(still);
  }
  return static_cast<int64_t>(running_.size() + queue_.size());
}

// One GPU step: sampling jobs for the device (guidance weight and divisor rounded as
// sample_step rounds them), the step enqueued without waiting. Requests with top-p < 1 make the
// step sample on the host instead (sample_step on downloaded logits, tokens written back).
void Engine::gpu_step() {
#ifdef LPD_WITH_CUDA
  const int64_t n = weights_.config.num_tokens;
  std::vector<kernels::cuda::SampleJob> jobs;
  std::vector<const Request*> owners;
  bool host_sampling = false;
  for (int64_t id : running_) {
    const Request& r = *requests_[id];
    const SamplingSettings& s = r.spec.sampling;
    if (s.top_p < 1.0 && !(s.temperature == 0.0 || s.top_k == 1)) host_sampling = true;
    const int64_t g = r.c[r.step + 2] - r.c[r.step + 1];
    for (int64_t b = 0; b < r.batch; ++b)
      for (int64_t j = 0; j < g; ++j) {
        const int64_t t = r.c[r.step + 1] - 1 + j;
        const double w = s.cfg_schedule == CfgSchedule::kLinear
                             ? 1.0 + (s.cfg - 1.0) * static_cast<double>(t) / static_cast<double>(n)
                             : s.cfg;
        kernels::cuda::SampleJob job{};
        job.seed = s.seed;
        job.cond_row = static_cast<int32_t>(r.logit_offset[static_cast<size_t>(b)] + j);
        job.uncond_row = s.guided() ? static_cast<int32_t>(r.logit_offset[static_cast<size_t>(r.batch + b)] + j) : -1;
        job.weight = static_cast<float>(w);
        job.divisor = static_cast<float>(std::max(s.temperature, 1e-5));
        job.gen_index = static_cast<int32_t>(t);
        job.image = static_cast<int32_t>(r.spec.first_image + b);
        job.top_k = static_cast<int32_t>(s.top_k);
        job.greedy = (s.temperature == 0.0 || s.top_k == 1) ? 1 : 0;
        job.out_index = static_cast<int32_t>(token_base(r, b) + t);
        jobs.push_back(job);
        owners.push_back(&r);
      }
  }
  if (!host_sampling) {
    gpu_->run(plan_, jobs);
    return;
  }
  gpu_->run(plan_, {});
  gpu_->logits_to_host(logits_);
  sample_step(logits_.data());
  std::vector<int32_t> index, value;
  for (size_t i = 0; i < jobs.size(); ++i) {
    index.push_back(jobs[i].out_index);
    const int64_t b = jobs[i].image - static_cast<int64_t>(owners[i]->spec.first_image);
    value.push_back(static_cast<int32_t>(owners[i]->generated[static_cast<size_t>(b * n + jobs[i].gen_index)]));
  }
  gpu_->tokens_from_host(index, value);
#endif
}

std::vector<float> Engine::last_logits() {
  std::lock_guard<std::mutex> lock(mutex_);
#ifdef LPD_WITH_CUDA
  if (gpu_) {
    std::vector<float> out;
    gpu_->logits_to_host(out);
    return out;
  }
#endif
  return logits_;
}

RequestState Engine::state(int64_t id) const {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = requests_.find(id);
  if (it == requests_.end()) fail(ErrorKind::kUnknownRequest, "unknown request id " + std::to_string(id));
  return it->second->state;
}

const RequestResult& Engine::result(int64_t id) const {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = requests_.find(id);
  if (it == requests_.end()) fail(ErrorKind::kUnknownRequest, "unknown request id " + std::to_string(id));
  if (it->second->state != RequestState::kDone)
    fail(ErrorKind::kInvalidArgument, "request " + std::to_string(id) + " is not finished");
  return it->second->result;
}

void Engine::release(int64_t id) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = requests_.find(id);
  if (it == requests_.end()) fail(ErrorKind::kUnknownRequest, "unknown request id " + std::to_string(id));
  if (it->second->state == RequestState::kRunning)
    fail(ErrorKind::kInvalidArgument, "request " + std::to_string(id) + " is running and cannot be released");
  if (it->second->state == RequestState::kQueued) queue_.erase(std::find(queue_.begin(), queue_.end(), id));
  requests_.erase(it);
}

RequestResult Engine::take(int64_t id) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = requests_.find(id);
  if (it == requests_.end()) fail(ErrorKind::kUnknownRequest, "unknown request id " + std::to_string(id));
  if (it->second->state != RequestState::kDone)
    fail(ErrorKind::kInvalidArgument, "request " + std::to_string(id) + " is not finished");
  RequestResult out = std::move(it->second->result);
  requests_.erase(it);
  return out;
}

void Engine::decode(const int64_t* tokens, int64_t batch, uint8_t* rgb) const {
#ifdef LPD_WITH_CUDA
  if (gpu_vq_) return gpu_vq_->decode(tokens, batch, rgb);
#endif
  const int64_t n = weights_.config.num_tokens, side = image_size();
  for (int64_t b = 0; b < batch; ++b) vq_->decode(tokens + b * n, weights_.config.grid(), rgb + b * side * side * 3);
}

RequestResult Engine::generate(RequestSpec spec) {
  const int64_t id = submit(std::move(spec));
  while (state(id) != RequestState::kDone) step();
  return take(id);
}

}  // namespace lpd
