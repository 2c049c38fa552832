// The KV block pool: O(1) allocate/release, all-or-nothing allocation, double-free detection,
// and the KV byte accounting.
#include <algorithm>
#include <set>

#include "lpd/kv_pool.h"
#include "test_util.h"

int main() {
  lpd::BlockPool pool(10);
  CHECK(pool.num_free() == 10);
  auto a = pool.allocate(4);
  auto b = pool.allocate(6);
  CHECK(a.size() == 4 && b.size() == 6 && pool.num_free() == 0);
  std::set<int32_t> ids(a.begin(), a.end());
  ids.insert(b.begin(), b.end());
  CHECK(ids.size() == 10 && *ids.begin() == 0 && *ids.rbegin() == 9);
  CHECK(pool.allocate(1).empty());  // exhausted: nothing taken
  pool.release(a);
  CHECK(pool.num_free() == 4);
  CHECK(pool.allocate(5).empty() && pool.num_free() == 4);  // all or nothing
  CHECK(throws_kind(lpd::ErrorKind::kInternal, [&] { pool.release(a); }, "double free"));
  CHECK(throws_kind(lpd::ErrorKind::kInternal, [&] { pool.release({42}); }, "foreign id"));
  auto c = pool.allocate(4);
  CHECK(c.size() == 4);
  pool.release(b);
  pool.release(c);
  CHECK(pool.num_free() == 10);
  CHECK(pool.allocate(0).empty() && pool.num_free() == 10);
  CHECK(throws_kind(lpd::ErrorKind::kInvalidArgument, [] { lpd::BlockPool bad(0); }, "empty pool"));

  // 2 layers x 3 blocks x 16 slots x 64 floats, K and V.
  CHECK(lpd::KvCache::bytes_for(2, 3, 16, 64) == 2u * 2 * 3 * 16 * 64 * 4);
  lpd::KvCache cache(2, 3, 16, 64);
  CHECK(cache.blocks_for_slots(17) == 2 && cache.blocks_for_slots(16) == 1);
  CHECK(cache.k(1) - cache.k(0) == 3 * 16 * 64);
  return finish("test_block_pool");
}
