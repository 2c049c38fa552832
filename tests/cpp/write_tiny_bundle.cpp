// Writes the tiny random bundle of test_util.h into argv[1] (used by the C API and example tests),
// with a steps-4 schedule (8 locality orders of seed 0) and default_cfg {"4": 2.5}.
#include "npz_writer.h"
#include "test_util.h"

int main(int argc, char** argv) {
  if (argc != 2) return 2;
  write_tiny_bundle(argv[1]);
  add_tiny_schedule(argv[1], 4, {1, 5, 5, 5}, 8, 0, 2.5);
  return 0;
}
