#!/usr/bin/env bash
# The whole test suite: install the package with its test extra (this compiles lpd_engine._C),
# build and run the C++ unit tests with CTest, then run pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q ".[test]"
cmake -S . -B build/cpp -DLPD_BUILD_PYTHON=OFF -DCMAKE_BUILD_TYPE=Release > build-cpp.log 2>&1 || { cat build-cpp.log; exit 1; }
cmake --build build/cpp -j "$(nproc)" >> build-cpp.log 2>&1 || { cat build-cpp.log; exit 1; }
rm -f build-cpp.log
ctest --test-dir build/cpp --output-on-failure
python3 -m pytest -q -p no:cacheprovider tests "$@"
