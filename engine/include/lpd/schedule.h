// Generation schedules: the locality-aware order of LPD (lpd-facts.md §4) and schedule checks.
//
// A schedule is group sizes g[0..S) (tokens generated at each step, summing to the grid's N
// cells) plus one order per image (a permutation of the cells; step k generates the next g[k]).
// The official generator is pure Python and slow enough that it pre-generates orders to files;
// this one is fast enough to make orders per request, and bit-exact to its numpy twin in
// tests/test_schedule.py because every random choice is a Philox word (lpd/rng.h).
//
// The locality order, for order index j of seed s on a grid x grid grid (cell c = row*grid+col):
//   step 0: the cell with the smallest key(c, 0) (ties: smaller cell). g[0] must be 1.
//   step k > 0, over the unselected cells:
//     proximity(c) = a + b/sqrt(2), a / b the selected orthogonal / diagonal neighbours of c
//       (the sum of 1/euclidean distance over selected cells within Chebyshev distance 1);
//     sort by (proximity descending, key(c, k) ascending, c ascending);
//     candidates-1: proximity >= `proximity`, in that order; candidates-2: the rest, in order;
//     walk candidates-1, taking a cell unless it lies within Chebyshev distance <= `repulsion` of
//       a cell taken in this step (then it goes to `filtered`), until g[k] cells are taken;
//     candidates-2 := candidates-2 + filtered + the unvisited rest of candidates-1;
//     the m cells still missing come from candidates-2: all of them, in order, if it holds no more
//       than m; otherwise by farthest-point sampling: repeatedly the candidate whose smallest
//       Euclidean distance to the cells taken in this step is largest (ties: earliest in
//       candidates-2), the first pick being the candidate with the smallest pick(c, k) (ties:
//       smaller cell) when this step has taken nothing yet.
//   key(c, k)  = philox_word(s, c, k, j, kStreamSchedule)
//   pick(c, k) = philox_word(s, c, k, j, kStreamSchedulePick)
// Order j depends only on (s, j): asking for more orders never changes earlier ones.
#pragma once

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <vector>

namespace lpd {

// Thrown by every check below; a std::invalid_argument, so generic handlers still catch it.
// The Python binding raises it as lpd_engine.errors.InvalidScheduleError.
struct ScheduleError : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};

// Largest grid side accepted (num_tokens = grid * grid must fit the generator's 27-bit cell ids).
constexpr int64_t kMaxGrid = 4096;

struct LocalityParams {
  int64_t grid;                      // the token grid is grid x grid; num_tokens = grid * grid
  std::vector<int64_t> group_sizes;  // [num_steps] positive, sum == num_tokens, [0] == 1
  uint64_t seed;
  double repulsion;  // >= 0; compared with Chebyshev distances, so 2.5 acts like 2
  double proximity;  // threshold of candidates-1; 1.0 in every published setting
};

// Throws ScheduleError unless every group size is positive and they sum to num_tokens.
void validate_group_sizes(const int64_t* group_sizes, size_t num_steps, int64_t num_tokens);

// Throws ScheduleError unless order[0..num_tokens) is a permutation of 0..num_tokens-1.
void validate_order(const int64_t* order, int64_t num_tokens);

// Throws ScheduleError unless params describe a locality schedule (see the field comments).
void validate_locality_params(const LocalityParams& params);

// Writes the locality orders j = first_index .. first_index + count - 1 into
// out [count, grid * grid], spread over num_threads threads (0: std::thread::hardware_concurrency).
// Validates everything first (ScheduleError), including first_index + count <= 2^32.
void locality_orders(const LocalityParams& params, int64_t first_index, int64_t count, int64_t* out,
                     int num_threads = 0);

}  // namespace lpd
