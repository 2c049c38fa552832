// The locality-aware order generator and the schedule checks (definitions: lpd/schedule.h).
//
// Speed comes from never rescanning the selected set: each cell keeps its count of selected
// orthogonal and diagonal neighbours, bumped when a neighbour is taken, so its proximity is a
// table look-up. The sort key (proximity rank, Philox key, cell) is packed into one uint64 and
// only candidates-1 is sorted; candidates-2 keeps the packed keys as ranks, which only argmax
// ties consult. The repulsion test is a stamp grid. Farthest-point sampling keeps each
// candidate's smallest squared distance (exact integers) and lowers it once per new pick in a
// branch-free, vectorisable loop. Orders are independent: threads take them from a counter.
#include "lpd/schedule.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <exception>
#include <limits>
#include <string>
#include <system_error>
#include <thread>

#include "lpd/rng.h"

namespace lpd {
namespace {

constexpr int kCellBits = 27;                  // kMaxGrid^2 = 2^24 cells fit
constexpr int kKeyShift = kCellBits;           // then 32 bits of Philox key
constexpr int kRankShift = kCellBits + 32;     // then 5 bits of proximity rank (0..24)
constexpr uint64_t kCellMask = (uint64_t{1} << kCellBits) - 1;
constexpr uint64_t kLateRank = uint64_t{31} << kRankShift;  // after every proximity rank

[[noreturn]] void fail(const std::string& message) { throw ScheduleError(message); }

std::string num(double v) {
  char text[32];
  std::snprintf(text, sizeof text, "%g", v);
  return text;
}

// One thread's workspace; build() writes one order.
class OrderBuilder {
 public:
  explicit OrderBuilder(const LocalityParams& p)
      : p_(p), grid_(p.grid), n_(p.grid * p.grid),
        reach_(p.repulsion >= static_cast<double>(p.grid) ? p.grid : static_cast<int64_t>(p.repulsion)),
        orth_(n_), diag_(n_), selected_(n_), stamp_(n_), row_of_(n_), col_of_(n_),
        free_in_block_((n_ + 3) / 4) {
    for (int64_t c = 0; c < n_; ++c) {
      row_of_[c] = static_cast<int32_t>(c / grid_);
      col_of_[c] = static_cast<int32_t>(c % grid_);
    }
    // Proximity a + b/sqrt(2) for a, b in 0..4; rank 0 is the largest value. Distinct (a, b)
    // never round to the same double, so ranks order exactly like the values.
    double value[25];
    for (int a = 0; a < 5; ++a)
      for (int b = 0; b < 5; ++b) value[a * 5 + b] = a + b / std::sqrt(2.0);
    for (int i = 0; i < 25; ++i) {
      int rank = 0;
      for (int other = 0; other < 25; ++other) rank += value[other] > value[i];
      rank_[i] = static_cast<uint64_t>(rank) << kRankShift;
      near_[i] = value[i] >= p.proximity;
    }
  }

  void build(uint32_t order_index, int64_t* out) {
    j_ = order_index;
    out_ = out;
    pos_ = 0;
    std::fill(orth_.begin(), orth_.end(), 0);
    std::fill(diag_.begin(), diag_.end(), 0);
    std::fill(selected_.begin(), selected_.end(), 0);
    std::fill(stamp_.begin(), stamp_.end(), 0);
    std::fill(free_in_block_.begin(), free_in_block_.end(), 4);
    if (n_ % 4) free_in_block_.back() = static_cast<uint8_t>(n_ % 4);
    uint64_t first = std::numeric_limits<uint64_t>::max();
    for (int64_t block = 0; block * 4 < n_; ++block) {
      const auto w = philox4x32(p_.seed, static_cast<uint32_t>(block), 0, j_, kStreamSchedule);
      for (int64_t c = block * 4; c < std::min(n_, block * 4 + 4); ++c)
        first = std::min(first, uint64_t{w[c % 4]} << 32 | static_cast<uint64_t>(c));
    }
    take(static_cast<int64_t>(first & 0xFFFFFFFFu), 0);
    for (size_t k = 1; k < p_.group_sizes.size(); ++k) step(static_cast<uint32_t>(k), p_.group_sizes[k]);
  }

 private:
  // Appends c to the order, stamps its repulsion square for step k, bumps its neighbours.
  void take(int64_t c, uint32_t k) {
    out_[pos_++] = c;
    selected_[c] = 1;
    --free_in_block_[c / 4];
    const int64_t row = row_of_[c], col = col_of_[c];
    const int64_t r0 = std::max<int64_t>(0, row - reach_), r1 = std::min(grid_ - 1, row + reach_);
    const int64_t c0 = std::max<int64_t>(0, col - reach_), c1 = std::min(grid_ - 1, col + reach_);
    for (int64_t r = r0; r <= r1; ++r)
      for (int64_t q = c0; q <= c1; ++q) stamp_[r * grid_ + q] = k + 1;
    for (int64_t dr = -1; dr <= 1; ++dr) {
      for (int64_t dc = -1; dc <= 1; ++dc) {
        const int64_t r = row + dr, q = col + dc;
        if ((dr == 0 && dc == 0) || r < 0 || r >= grid_ || q < 0 || q >= grid_) continue;
        ++((dr == 0 || dc == 0) ? orth_ : diag_)[r * grid_ + q];
      }
    }
  }

  void step(uint32_t k, int64_t group_size) {
    near_list_.clear();
    far_list_.clear();
    for (int64_t block = 0; block * 4 < n_; ++block) {
      if (free_in_block_[block] == 0) continue;
      const auto w = philox4x32(p_.seed, static_cast<uint32_t>(block), k, j_, kStreamSchedule);
      for (int64_t c = block * 4; c < std::min(n_, block * 4 + 4); ++c) {
        if (selected_[c]) continue;
        const int cls = orth_[c] * 5 + diag_[c];
        const uint64_t packed = rank_[cls] | uint64_t{w[c % 4]} << kKeyShift | static_cast<uint64_t>(c);
        (near_[cls] ? near_list_ : far_list_).push_back(packed);
      }
    }
    std::sort(near_list_.begin(), near_list_.end());

    // Walk candidates-1 with repulsion.
    const int64_t step_begin = pos_;
    filtered_.clear();
    size_t visited = 0;
    while (pos_ - step_begin < group_size && visited < near_list_.size()) {
      const auto c = static_cast<int32_t>(near_list_[visited++] & kCellMask);
      if (stamp_[c] == k + 1)
        filtered_.push_back(c);
      else
        take(c, k);
    }
    const int64_t missing = group_size - (pos_ - step_begin);
    if (missing == 0) return;

    // Candidates-2 with ranks in candidates-2 order: far cells keep their sort keys (sorting them
    // is the expensive part, and only ties need it); filtered then unvisited near cells follow.
    pool_.clear();
    pool_rank_.clear();
    for (uint64_t e : far_list_) add_to_pool(e);
    uint64_t position = 0;
    for (int32_t c : filtered_) add_to_pool(kLateRank | position++ << kKeyShift | static_cast<uint64_t>(c));
    for (size_t i = visited; i < near_list_.size(); ++i)
      add_to_pool(kLateRank | position++ << kKeyShift | (near_list_[i] & kCellMask));
    if (static_cast<int64_t>(pool_.size()) <= missing) {
      std::sort(pool_rank_.begin(), pool_rank_.end());
      for (uint64_t e : pool_rank_) take(static_cast<int64_t>(e & kCellMask), k);
      return;
    }
    farthest_points(k, step_begin, missing);
  }

  void add_to_pool(uint64_t rank_and_cell) {
    pool_rank_.push_back(rank_and_cell);
    pool_.push_back(static_cast<int32_t>(rank_and_cell & kCellMask));
  }

  // Takes `missing` cells of pool_ by farthest-point sampling from the cells of this step.
  // best_d2_ holds each candidate's smallest squared distance to them, -1 once it is taken.
  void farthest_points(uint32_t k, int64_t step_begin, int64_t missing) {
    const size_t m = pool_.size();
    row_.resize(m);
    col_.resize(m);
    best_d2_.assign(m, std::numeric_limits<int32_t>::max());
    for (size_t i = 0; i < m; ++i) {
      row_[i] = static_cast<int16_t>(row_of_[pool_[i]]);
      col_[i] = static_cast<int16_t>(col_of_[pool_[i]]);
    }
    if (pos_ == step_begin) {
      size_t first = 0;
      uint64_t first_key = std::numeric_limits<uint64_t>::max();
      for (size_t i = 0; i < m; ++i) {
        const auto c = static_cast<uint32_t>(pool_[i]);
        const uint64_t key = uint64_t{philox_word(p_.seed, c, k, j_, kStreamSchedulePick)} << 32 | c;
        if (key < first_key) first_key = key, first = i;
      }
      take(pool_[first], k);
      best_d2_[first] = -1;
      --missing;
    }
    int32_t largest = 0;
    for (int64_t t = step_begin; t < pos_; ++t) largest = shrink(out_[t]);
    for (; missing > 0; --missing) {
      size_t best = 0;
      uint64_t best_rank = std::numeric_limits<uint64_t>::max();
      for (size_t i = 0; i < m; ++i)
        if (best_d2_[i] == largest && pool_rank_[i] < best_rank) best = i, best_rank = pool_rank_[i];
      take(pool_[best], k);
      best_d2_[best] = -1;
      if (missing > 1) largest = shrink(pool_[best]);
    }
  }

  // Lowers every candidate's smallest squared distance by the taken cell c; returns the largest.
  // Branch-free, so the compiler vectorises it.
  int32_t shrink(int64_t c) {
    const auto r = static_cast<int16_t>(row_of_[c]), q = static_cast<int16_t>(col_of_[c]);
    int32_t largest = -1;
    for (size_t i = 0; i < best_d2_.size(); ++i) {
      const auto dr = static_cast<int16_t>(row_[i] - r), dc = static_cast<int16_t>(col_[i] - q);
      best_d2_[i] = std::min(best_d2_[i], int32_t{dr} * dr + int32_t{dc} * dc);
      largest = std::max(largest, best_d2_[i]);
    }
    return largest;
  }

  const LocalityParams& p_;
  const int64_t grid_, n_, reach_;
  uint64_t rank_[25];
  bool near_[25];
  std::vector<uint8_t> orth_, diag_, selected_;
  std::vector<uint32_t> stamp_;
  std::vector<int32_t> row_of_, col_of_;  // [num_tokens] a cell's row and column
  std::vector<uint8_t> free_in_block_;    // [num_tokens / 4] unselected cells of each Philox block
  std::vector<uint64_t> near_list_, far_list_;  // (proximity rank, key, cell) packed, see kRankShift
  std::vector<int32_t> filtered_;
  std::vector<int32_t> pool_;       // [pool size] candidates-2 cells
  std::vector<uint64_t> pool_rank_; // [pool size] (rank in candidates-2 order, cell) packed
  std::vector<int16_t> row_, col_;  // [pool size] (int16: the distance loop vectorises better)
  std::vector<int32_t> best_d2_;    // [pool size]
  uint32_t j_ = 0;
  int64_t* out_ = nullptr;
  int64_t pos_ = 0;
};

}  // namespace

void validate_group_sizes(const int64_t* group_sizes, size_t num_steps, int64_t num_tokens) {
  if (num_steps == 0) fail("group_sizes is empty");
  if (static_cast<int64_t>(num_steps) > num_tokens)
    fail(std::to_string(num_steps) + " steps for " + std::to_string(num_tokens) +
         " tokens: every step must generate at least one token");
  int64_t total = 0;
  for (size_t i = 0; i < num_steps; ++i) {
    const int64_t g = group_sizes[i];
    if (g <= 0 || g > num_tokens)
      fail("group_sizes[" + std::to_string(i) + "] = " + std::to_string(g) + " is not in [1, " +
           std::to_string(num_tokens) + "]");
    total += g;
  }
  if (total != num_tokens)
    fail("group sizes sum to " + std::to_string(total) + ", expected " + std::to_string(num_tokens));
}

void validate_order(const int64_t* order, int64_t num_tokens) {
  std::vector<int64_t> seen_at(static_cast<size_t>(num_tokens), -1);
  for (int64_t i = 0; i < num_tokens; ++i) {
    const int64_t c = order[i];
    if (c < 0 || c >= num_tokens)
      fail("order[" + std::to_string(i) + "] = " + std::to_string(c) + " is not a cell in [0, " +
           std::to_string(num_tokens) + ")");
    if (seen_at[c] >= 0)
      fail("order repeats cell " + std::to_string(c) + " (positions " + std::to_string(seen_at[c]) + " and " +
           std::to_string(i) + "), so it is not a permutation");
    seen_at[c] = i;
  }
}

void validate_locality_params(const LocalityParams& p) {
  if (p.grid < 1 || p.grid > kMaxGrid)
    fail("grid must be in [1, " + std::to_string(kMaxGrid) + "], got " + std::to_string(p.grid));
  validate_group_sizes(p.group_sizes.data(), p.group_sizes.size(), p.grid * p.grid);
  if (p.group_sizes[0] != 1)
    fail("the locality order takes one cell at step 0, so group_sizes[0] must be 1, got " +
         std::to_string(p.group_sizes[0]));
  if (!(p.repulsion >= 0.0)) fail("repulsion must be a number >= 0, got " + num(p.repulsion));
  if (std::isnan(p.proximity)) fail("proximity must be a number, got nan");
}

void locality_orders(const LocalityParams& params, int64_t first_index, int64_t count, int64_t* out,
                     int num_threads) {
  validate_locality_params(params);
  if (count < 0) fail("count must be >= 0, got " + std::to_string(count));
  if (first_index < 0 || first_index + count > (int64_t{1} << 32))
    fail("order indices must lie in [0, 2^32): first_index = " + std::to_string(first_index) +
         ", count = " + std::to_string(count));
  if (num_threads < 0) fail("num_threads must be >= 0, got " + std::to_string(num_threads));
  if (num_threads == 0) num_threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  num_threads = static_cast<int>(std::min<int64_t>(num_threads, std::max<int64_t>(count, 1)));

  const int64_t n = params.grid * params.grid;
  std::atomic<int64_t> next{0};
  std::vector<std::exception_ptr> errors(static_cast<size_t>(num_threads));
  auto work = [&](int t) {
    try {
      OrderBuilder builder(params);
      for (int64_t i = next++; i < count; i = next++)
        builder.build(static_cast<uint32_t>(first_index + i), out + i * n);
    } catch (...) {
      errors[t] = std::current_exception();
    }
  };
  std::vector<std::thread> threads;
  try {
    for (int t = 1; t < num_threads; ++t) threads.emplace_back(work, t);
  } catch (const std::system_error&) {
    // No more threads to be had: the ones running (and this one) share all the orders.
  }
  work(0);
  for (auto& thread : threads) thread.join();
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
}

}  // namespace lpd
