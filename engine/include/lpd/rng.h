// The counter-based RNG shared by every lpd-engine backend (definition: docs/rng.md).
//
// Philox4x32-10 keyed by a 64-bit seed; a counter of four 32-bit words addresses each number,
// so any (seed, image, generation index, vocabulary id) is drawn independently of everything
// else in a batch. python/lpd_engine/rng.py is the bit-exact twin; tests/cpp/test_rng.cpp and
// tests/test_rng.py check both against the Random123 known-answer vectors.
#pragma once

#include <array>
#include <cstdint>

namespace lpd {

enum RngStream : uint32_t {
  kStreamSampling = 0,       // counter (vocab_id / 4, gen_index, image, 0)
  kStreamSchedule = 1,       // counter (cell / 4, step, order_index, 1)
  kStreamSchedulePick = 2,   // counter (cell / 4, step, order_index, 2)
  kStreamRandomOrder = 3,    // counter (cell / 4, 0, order_index, 3)
  kStreamOrderPick = 4,      // counter (image / 4, 0, 0, 4): precomputed order = word % count
};

// Philox4x32-10: four 32-bit outputs for one (seed, counter).
std::array<uint32_t, 4> philox4x32(uint64_t seed, uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3);

// ((x >> 8) + 0.5) * 2^-24: a double in (0, 1), computed exactly (25 significant bits).
inline double to_uniform(uint32_t x) { return (static_cast<double>(x >> 8) + 0.5) * (1.0 / 16777216.0); }

// The 32-bit word for `id` of the stream: philox(seed, id / 4, c1, c2, stream)[id % 4].
inline uint32_t philox_word(uint64_t seed, uint32_t id, uint32_t c1, uint32_t c2, uint32_t stream) {
  return philox4x32(seed, id / 4, c1, c2, stream)[id % 4];
}

}  // namespace lpd
