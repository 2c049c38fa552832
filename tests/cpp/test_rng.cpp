// Philox4x32-10 against the Random123 known-answer vectors, and the uniform mapping's range.
#include <cstdio>
#include <cstdlib>

#include "lpd/rng.h"

static int failures = 0;
#define CHECK(cond) do { if (!(cond)) { std::printf("FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond); ++failures; } } while (0)

int main() {
  auto a = lpd::philox4x32(0, 0, 0, 0, 0);
  CHECK(a[0] == 0x6627e8d5u && a[1] == 0xe169c58du && a[2] == 0xbc57ac4cu && a[3] == 0x9b00dbd8u);
  auto b = lpd::philox4x32(~0ull, ~0u, ~0u, ~0u, ~0u);
  CHECK(b[0] == 0x408f276du && b[1] == 0x41c83b0eu && b[2] == 0xa20bc7c6u && b[3] == 0x6d5451fdu);
  auto c = lpd::philox4x32(0x299f31d0a4093822ull, 0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u);
  CHECK(c[0] == 0xd16cfe09u && c[1] == 0x94fdccebu && c[2] == 0x5001e420u && c[3] == 0x24126ea1u);
  CHECK(lpd::to_uniform(0u) > 0.0 && lpd::to_uniform(~0u) < 1.0);
  std::printf("%s\n", failures ? "test_rng: FAILED" : "test_rng: ok");
  return failures ? EXIT_FAILURE : EXIT_SUCCESS;
}
