// CPU thread count of the kernels. OpenMP when the build found it (csrc/CMakeLists.txt),
// otherwise everything runs on the calling thread.
#include "lpd/kernels/common.h"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace lpd::kernels {

void set_num_threads(int n) {
#ifdef _OPENMP
  omp_set_num_threads(n > 0 ? n : omp_get_num_procs());
#else
  (void)n;
#endif
}

int num_threads() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

}  // namespace lpd::kernels
