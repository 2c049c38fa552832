// The locality-order generator: permutations, one cell at step 0, determinism across thread
// counts and calls, order j independent of first_index, and the validation errors.
// (Bit-exactness against the numpy twin is tested in tests/test_schedule.py.)
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <vector>

#include "lpd/schedule.h"

static int failures = 0;
#define CHECK(cond) do { if (!(cond)) { std::printf("FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond); ++failures; } } while (0)

static bool throws_schedule_error(const std::function<void()>& f) {
  try {
    f();
  } catch (const lpd::ScheduleError&) {
    return true;
  }
  return false;
}

static std::vector<int64_t> orders(const lpd::LocalityParams& p, int64_t first, int64_t count, int threads) {
  std::vector<int64_t> out(static_cast<size_t>(count * p.grid * p.grid), -1);
  lpd::locality_orders(p, first, count, out.data(), threads);
  return out;
}

static bool is_permutation(const int64_t* order, int64_t n) {
  try {
    lpd::validate_order(order, n);
  } catch (const lpd::ScheduleError&) {
    return false;
  }
  return true;
}

int main() {
  // grid 5, 25 cells in 6 steps; grid 16 with the published 256 px 20-step table.
  const lpd::LocalityParams small{5, {1, 2, 3, 4, 7, 8}, 7, 1.0, 1.0};
  const lpd::LocalityParams p16{16, {1, 2, 4, 5, 7, 8, 10, 11, 12, 14, 15, 16, 17, 18, 18, 19, 19, 20, 20, 20}, 42, 2.0, 1.0};
  for (const auto* p : {&small, &p16}) {
    const int64_t n = p->grid * p->grid;
    const auto a = orders(*p, 0, 9, 1), b = orders(*p, 0, 9, 3), c = orders(*p, 4, 2, 0);
    for (int64_t j = 0; j < 9; ++j) CHECK(is_permutation(a.data() + j * n, n));
    CHECK(a == b);
    CHECK(std::vector<int64_t>(a.begin() + 4 * n, a.begin() + 6 * n) == c);
    CHECK(std::vector<int64_t>(a.begin(), a.begin() + n) != std::vector<int64_t>(a.begin() + n, a.begin() + 2 * n));
    lpd::LocalityParams other = *p;
    other.seed += 1;
    CHECK(orders(other, 0, 1, 1) != std::vector<int64_t>(a.begin(), a.begin() + n));
  }
  // One cell, one step.
  CHECK(orders({1, {1}, 0, 2.0, 1.0}, 0, 1, 1) == std::vector<int64_t>{0});

  const int64_t bad_order[] = {0, 2, 2, 1}, out_of_range[] = {0, 1, 2, 4}, good[] = {3, 1, 0, 2};
  CHECK(is_permutation(good, 4));
  CHECK(!is_permutation(bad_order, 4));
  CHECK(!is_permutation(out_of_range, 4));
  const int64_t sizes_bad_sum[] = {1, 2}, sizes_zero[] = {1, 0, 3};
  CHECK(throws_schedule_error([&] { lpd::validate_group_sizes(sizes_bad_sum, 2, 4); }));
  CHECK(throws_schedule_error([&] { lpd::validate_group_sizes(sizes_zero, 3, 4); }));
  CHECK(throws_schedule_error([&] { lpd::validate_group_sizes(nullptr, 0, 4); }));
  int64_t dummy[4];
  auto run = [&](lpd::LocalityParams p, int64_t first = 0, int64_t count = 1) {
    return throws_schedule_error([&] { lpd::locality_orders(p, first, count, dummy, 1); });
  };
  CHECK(run({2, {2, 2}, 0, 1.0, 1.0}));            // first group must be 1
  CHECK(run({2, {1, 2}, 0, 1.0, 1.0}));            // sums to 3, not 4
  CHECK(run({0, {1}, 0, 1.0, 1.0}));               // grid < 1
  CHECK(run({2, {1, 3}, 0, -1.0, 1.0}));           // negative repulsion
  CHECK(run({2, {1, 3}, 0, 0.0 / 0.0, 1.0}));      // NaN repulsion
  CHECK(run({2, {1, 3}, 0, 1.0, 1.0}, 0, -1));     // negative count
  CHECK(run({2, {1, 3}, 0, 1.0, 1.0}, (int64_t{1} << 32) - 1, 2));  // index past 2^32
  CHECK(!run({2, {1, 3}, 0, 1.0, 1.0}, (int64_t{1} << 32) - 1, 1));
  std::printf("%s\n", failures ? "test_schedule: FAILED" : "test_schedule: ok");
  return failures ? EXIT_FAILURE : EXIT_SUCCESS;
}
