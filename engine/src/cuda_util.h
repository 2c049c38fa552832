// Host-side helpers shared by the GPU decoders (cuda_decoder.cpp, cuda_vq_decoder.cpp): error
// checks that throw lpd::Error, float -> bf16 rounding, a growable device buffer, the weight
// arena and the per-shape CUDA graph cache. Internal to engine/src; built only with LPD_WITH_CUDA.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "lpd/errors.h"
#include "lpd/kernels/common.h"

namespace lpd::cuda_util {

inline void cuda_check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) fail(ErrorKind::kInternal, std::string("CUDA ") + what + ": " + cudaGetErrorString(e));
}

inline void check(kernels::Status s, const char* what) {
  if (s != kernels::Status::kOk)
    fail(ErrorKind::kInternal, std::string(what) + " (CUDA) failed: " + kernels::status_string(s));
}

inline uint16_t to_bf16(float f) {  // round to nearest even; NaN stays NaN
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

template <typename T>
struct DeviceBuffer {
  T* ptr = nullptr;
  size_t count = 0;
  DeviceBuffer() = default;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  void resize(size_t n) {  // grows only; contents are not kept
    if (n <= count) return;
    if (ptr) cudaFree(ptr);
    ptr = nullptr;
    count = 0;
    cuda_check(cudaMalloc(&ptr, n * sizeof(T)), "cudaMalloc");
    count = n;
  }
  ~DeviceBuffer() {
    if (ptr) cudaFree(ptr);
  }
};

// Every weight of a decoder in one device allocation of `capacity` bytes, 256-byte aligned pieces.
class WeightArena {
 public:
  explicit WeightArena(size_t capacity) { buffer_.resize(capacity); }
  template <typename T>
  const T* upload(const std::vector<T>& host) {
    const size_t bytes = host.size() * sizeof(T);
    used_ = (used_ + 255) / 256 * 256;
    if (used_ + bytes > buffer_.count) fail(ErrorKind::kInternal, "GPU weight arena overflow");
    char* dst = buffer_.ptr + used_;
    cuda_check(cudaMemcpy(dst, host.data(), bytes, cudaMemcpyHostToDevice), "weight upload");
    used_ += bytes;
    return reinterpret_cast<const T*>(dst);
  }
  const uint16_t* upload_bf16(const std::vector<float>& f) {
    std::vector<uint16_t> b(f.size());
    for (size_t i = 0; i < f.size(); ++i) b[i] = to_bf16(f[i]);
    return upload(b);
  }
  size_t used() const { return used_; }
  size_t capacity() const { return buffer_.count; }

 private:
  DeviceBuffer<char> buffer_;
  size_t used_ = 0;
};

// One pass of work per shape key on a stream: run eagerly the first time a key is seen (the
// cuBLASLt / cuDNN plans are made then, which a capture cannot do), captured as a CUDA graph
// the second time, and replayed from then on. clear() drops the graphs (buffers they point
// into moved).
template <typename Key>
class GraphCache {
 public:
  GraphCache() = default;
  GraphCache(const GraphCache&) = delete;
  GraphCache& operator=(const GraphCache&) = delete;
  ~GraphCache() { clear(); }

  template <typename Forward>
  void run(const Key& key, cudaStream_t stream, bool use_graphs, Forward&& forward) {
    auto g = graphs_.find(key);
    if (g != graphs_.end()) {
      cuda_check(cudaGraphLaunch(g->second, stream), "graph launch");
    } else if (!use_graphs || seen_[key]++ == 0) {
      forward();
    } else {
      cudaGraph_t graph;
      cuda_check(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal), "begin capture");
      forward();
      cuda_check(cudaStreamEndCapture(stream, &graph), "end capture");
      cudaGraphExec_t exec;
      const cudaError_t e = cudaGraphInstantiate(&exec, graph, 0);
      cudaGraphDestroy(graph);
      cuda_check(e, "graph instantiate");
      graphs_[key] = exec;
      cuda_check(cudaGraphLaunch(exec, stream), "graph launch");
    }
  }
  void clear() {
    for (auto& [k, g] : graphs_) cudaGraphExecDestroy(g);
    graphs_.clear();
  }

 private:
  std::map<Key, cudaGraphExec_t> graphs_;
  std::map<Key, int> seen_;
};

}  // namespace lpd::cuda_util
