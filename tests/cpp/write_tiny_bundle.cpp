// Writes the tiny random bundle of test_util.h into argv[1] (used by the C API and example tests).
#include "test_util.h"

int main(int argc, char** argv) {
  if (argc != 2) return 2;
  write_tiny_bundle(argv[1]);
  return 0;
}
