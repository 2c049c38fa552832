// The paged KV cache, runtime side: a pool of fixed-size blocks shared by every layer.
//
// A block id b names, in every layer, block_size slots of K and of V ([block_size, width]
// floats each, width = heads * head_dim), so one block table per sequence serves all layers.
// All blocks are allocated once; free ids sit on a stack (O(1) allocate/release). A request
// reserves every block its sequences will ever need (N + 1 slots each) when it is admitted,
// so nothing is preempted mid-image, and it returns them when it finishes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace lpd {

class BlockPool {
 public:
  explicit BlockPool(int64_t num_blocks);
  int64_t num_blocks() const { return num_blocks_; }
  int64_t num_free() const { return static_cast<int64_t>(free_.size()); }
  // n block ids, or an empty vector (and nothing taken) when fewer than n are free.
  std::vector<int32_t> allocate(int64_t n);
  // Returns ids taken from this pool; throws Error(kInternal) on a double free or a foreign id.
  void release(const std::vector<int32_t>& ids);

 private:
  int64_t num_blocks_;
  std::vector<int32_t> free_;
  std::vector<uint8_t> in_use_;
};

class KvCache {
 public:
  // storage = false: blocks and tables only (the GPU decoder keeps the K/V itself).
  KvCache(int64_t num_layers, int64_t num_blocks, int64_t block_size, int64_t width, bool storage = true);
  // Bytes of K and V for num_blocks blocks of a model: 2 * layers * blocks * block_size * width *
  // element_bytes (4 for the CPU's float32, 2 for the GPU's bf16).
  static size_t bytes_for(int64_t num_layers, int64_t num_blocks, int64_t block_size, int64_t width,
                          size_t element_bytes = sizeof(float));

  float* k(int64_t layer) { return k_.data() + layer * layer_stride_; }
  float* v(int64_t layer) { return v_.data() + layer * layer_stride_; }
  int64_t block_size() const { return block_size_; }
  int64_t width() const { return width_; }
  BlockPool& pool() { return pool_; }
  const BlockPool& pool() const { return pool_; }
  int64_t blocks_for_slots(int64_t slots) const { return (slots + block_size_ - 1) / block_size_; }

 private:
  int64_t block_size_, width_;
  size_t layer_stride_;
  std::vector<float> k_, v_;
  BlockPool pool_;
};

}  // namespace lpd
