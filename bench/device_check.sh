#!/usr/bin/env bash
# One short run on a GPU machine with no registry access (issue 24): a venv on top of the
# machine's own CUDA torch, the wheels of `make device-kit` (.device-kit/) installed offline,
# then the `gpu` tests and the GPU benchmarks (1.7B-shaped random weights, bf16; the decode step
# dynamic / static / CUDA graphs side by side: bench_graphs.py), one summary.
# Budget: under 10 minutes on an H100.   Usage: bench/device_check.sh [outdir]
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-${OUT:-bench/out/device-check}}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
SITE=${DEVICE_SITE:-/tmp/qwen3ttsd-device-site}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
step() { echo "== $* ($(date +%T))"; }

# The kit goes into its own folder on PYTHONPATH, over the machine's Python: a venv with
# --system-site-packages would not see torch where that Python is itself a venv (the GPU
# image's /opt/torch/.venv), since such a venv sees only the base interpreter's packages.
step "kit over the machine's torch"
$PY -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")' || exit 1
$PY -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$SITE" .device-kit/* \
  || { echo "offline install failed (run make device-kit on a machine with a registry)"; exit 1; }
export PYTHONPATH=$PWD:$SITE
P=$PY
$P -c 'import qwen3ttsd, torch; assert torch.cuda.is_available(); print("qwen3ttsd from", qwen3ttsd.__file__)' || exit 1

step "1.7B-shaped random checkpoint (built once, both benchmarks use it)"
MODEL=${DEVICE_MODEL:-/tmp/qwen3ttsd-cv-1.7b}
[ -f "$MODEL/config.json" ] || $P -m qwen3ttsd.testing.tinymodel "$MODEL" --size 1.7b || exit 1

step "gpu tests"
timeout 150 $P -m pytest -q -m "gpu or fake_cuda" -p no:cacheprovider tests/test_gpu.py tests/test_fake_cuda.py tests/test_static_step_fake_cuda.py 2>&1 | tee "$OUT/tests.log"
tests_rc=${PIPESTATUS[0]}

step "bench_engine --device cuda --size 1.7b"
timeout 150 $P bench/bench_engine.py --device cuda --size 1.7b --model "$MODEL" --frames 100 --reps 2 --only backends 2>&1 | tee "$OUT/engine.log"
engine_rc=${PIPESTATUS[0]}

step "bench_graphs --device cuda --size 1.7b: dynamic vs static vs CUDA graphs"
timeout 150 $P bench/bench_graphs.py --device cuda --size 1.7b --model "$MODEL" --batches 1,8,32 --frames 40 --reps 2 \
  2>&1 | tee "$OUT/graphs.log"
graphs_rc=${PIPESTATUS[0]}

step "bench_concurrency --device cuda --size 1.7b, levels 1-64"
timeout 240 $P bench/bench_concurrency.py --device cuda --size 1.7b --model "$MODEL" --engines batched --levels 1,4,16,64 \
  --max-batch 64 --frames 40 --waves 1 2>&1 | tee "$OUT/concurrency.log"
conc_rc=${PIPESTATUS[0]}

step "summary"
{
  echo "device: $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null)"
  echo "tests rc=$tests_rc: $(tail -n 1 "$OUT/tests.log")"
  echo "bench_engine rc=$engine_rc:"; grep -E "^(model|batched|sequential)" "$OUT/engine.log" | head -n 12
  echo "bench_graphs rc=$graphs_rc (ms/step; static and graphs vs dynamic):"
  grep -E "^ *(streams|[0-9]+ )|^graphs:|codes ==" "$OUT/graphs.log"
  echo "bench_concurrency rc=$conc_rc:"; grep -E "^ *[0-9]+ |first-audio" "$OUT/concurrency.log"
  echo "targets (issue 24): solo first audio p50 <= 30 ms; N=16 min x-rt >= 3, first p95 <= 50 ms; N=64 min x-rt >= 1"
} | tee "$OUT/summary.txt"
[ "$tests_rc" = 0 ] && [ "$engine_rc" = 0 ] && [ "$graphs_rc" = 0 ] && [ "$conc_rc" = 0 ]
