// Block pool and KV storage (lpd/kv_pool.h).
#include "lpd/kv_pool.h"

#include "lpd/errors.h"

namespace lpd {

BlockPool::BlockPool(int64_t num_blocks) : num_blocks_(num_blocks), in_use_(static_cast<size_t>(num_blocks), 0) {
  if (num_blocks <= 0 || num_blocks > INT32_MAX) fail(ErrorKind::kInvalidArgument, "KV pool needs 1..2^31-1 blocks");
  free_.reserve(static_cast<size_t>(num_blocks));
  for (int64_t b = num_blocks - 1; b >= 0; --b) free_.push_back(static_cast<int32_t>(b));
}

std::vector<int32_t> BlockPool::allocate(int64_t n) {
  if (n < 0 || n > num_free()) return {};
  std::vector<int32_t> ids(free_.end() - n, free_.end());
  free_.resize(free_.size() - static_cast<size_t>(n));
  for (int32_t id : ids) in_use_[static_cast<size_t>(id)] = 1;
  return ids;
}

void BlockPool::release(const std::vector<int32_t>& ids) {
  for (int32_t id : ids) {
    if (id < 0 || id >= num_blocks_ || !in_use_[static_cast<size_t>(id)])
      fail(ErrorKind::kInternal, "KV block " + std::to_string(id) + " released twice or not from this pool");
    in_use_[static_cast<size_t>(id)] = 0;
    free_.push_back(id);
  }
}

static size_t checked_stride(int64_t num_layers, int64_t num_blocks, int64_t block_size, int64_t width) {
  if (block_size <= 0 || width <= 0 || num_layers <= 0 || num_blocks <= 0)
    fail(ErrorKind::kInvalidArgument, "bad KV cache shape");
  return static_cast<size_t>(num_blocks * block_size * width);
}

size_t KvCache::bytes_for(int64_t num_layers, int64_t num_blocks, int64_t block_size, int64_t width,
                          size_t element_bytes) {
  return 2 * static_cast<size_t>(num_layers) * num_blocks * block_size * width * element_bytes;
}

KvCache::KvCache(int64_t num_layers, int64_t num_blocks, int64_t block_size, int64_t width, bool storage)
    : block_size_(block_size),
      width_(width),
      layer_stride_(checked_stride(num_layers, num_blocks, block_size, width)),
      k_(storage ? layer_stride_ * num_layers : 0),
      v_(storage ? layer_stride_ * num_layers : 0),
      pool_(num_blocks) {}

}  // namespace lpd
