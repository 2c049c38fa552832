#!/usr/bin/env bash
# One device call: build the CUDA path, run tests/test_cuda.py, the per-stage timings, the
# benchmark, and (when .peer/lpd holds the official models/) the official code as the peer.
# Usage (device tool): CASES="lpd_l:256:20:1,64" bash bench/run_device.sh   (logs and JSON under $OUT)
# SKIP_TESTS=1 / SKIP_STAGES=1 / SKIP_PEER=1 leave those parts out.
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
CASES=${CASES:-lpd_l:256:20:1,64 lpd_xl:256:20:1,64 lpd_l:512:48:1}
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv | tee "$OUT/env.txt"
python3 -c "import torch; print('torch', torch.__version__, torch.version.cuda, 'cudnn', torch.backends.cudnn.version())" | tee -a "$OUT/env.txt"
t0=$(date +%s)
cmake -S . -B build/dev -G Ninja -DLPD_BUILD_TESTS=OFF -DCMAKE_BUILD_TYPE=Release \
  -DPython_EXECUTABLE="$(command -v python3)" > "$OUT/build.log" 2>&1 && cmake --build build/dev -j 16 >> "$OUT/build.log" 2>&1 \
  || { tail -40 "$OUT/build.log"; exit 1; }
grep "lpd:" "$OUT/build.log"; echo "build $(( $(date +%s) - t0 )) s"
cp build/dev/_C*.so python/lpd_engine/
export PYTHONPATH=$PWD/python:$PWD/tests:$PWD/export
if [ -z "${SKIP_TESTS:-}" ]; then
  timeout ${TEST_TIMEOUT:-200} python3 -m pytest -q -s -p no:cacheprovider tests/test_cuda.py ${TEST_ARGS:-} 2>&1 \
    | tee "$OUT/test_cuda.log" | grep -v "^$" | tail -40
fi
[ -z "${SKIP_STAGES:-}" ] && timeout 60 python3 bench/stages_cuda.py 2>&1 | tee "$OUT/stages.log" | tail -14
timeout ${BENCH_TIMEOUT:-300} python3 bench/bench_cuda.py --cases $CASES --out "$OUT/bench.json" ${BENCH_ARGS:-} 2>&1 \
  | tee "$OUT/bench.log" | tail -12
if [ -z "${SKIP_PEER:-}" ] && [ -d .peer/lpd/models ]; then
  timeout ${PEER_TIMEOUT:-200} python3 bench/official_peer.py --cases $CASES --out "$OUT/peer.json" 2>&1 \
    | tee "$OUT/peer.log" | tail -8
  [ -f "$OUT/bench.json" ] && [ -f "$OUT/peer.json" ] && python3 bench/ratios.py "$OUT/bench.json" "$OUT/peer.json"
fi
echo "total $(( $(date +%s) - t0 )) s"
