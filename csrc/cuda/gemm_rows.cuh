// The few-row GEMM kernel (gemm_rows.cu), internal to csrc/cuda: gemm() in gemm.cu calls it
// when gemm_few_rows() holds.
#pragma once

#include <cstdint>

#include "lpd/kernels/gemm.h"

namespace lpd::kernels::cuda {

// K splits (= cluster size, 1..8) for an m x n x k product, or 0 where none fits shared memory.
int gemm_rows_splits(int64_t m, int64_t n, int64_t k);

Status gemm_rows(const GemmArgs& args, int splits, Stream stream);

}  // namespace lpd::kernels::cuda
