#!/usr/bin/env bash
# Issue 6's GPU measurements in a few long device calls (a lent accelerator's time is short).
# Run on the device machine from the repo root, one stage per call (each meant to end well
# inside the 10-minute limit; records are appended model by model, so a cut-off call keeps
# what finished):
#
#   bash tools/gpu_session.sh fp32      # GPU tests (cuDNN LSTM, bench parity), fp32 model benches
#   bash tools/gpu_session.sh extras    # 3-minute-track X-UMX RTF, grain pipeline (16 cores)
#   bash tools/gpu_session.sh lowp      # tf32 and bf16 model benches
#   bash tools/gpu_session.sh cache     # compile cache: fresh processes, cold vs warm (last)
#
# Between calls, copy the returned fp32.jsonl into benchmarks/results/<device slug>/ (it
# travels with the next call's working tree): the pipeline bench reads the train rates it
# compares against from there.
# with `carry: [".whl"]`: the wheels the device image lacks for the pipeline bench (grain,
# soundfile; ChimeraNet's pipeline also imports its recipe (ml_collections), and its pitch-shift /
# time-stretch mode needs librosa). The model benches need none of them. 6.6 MB:
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
#     --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any -d .whl \
#     grain==0.2.18 array-record==0.8.6 portpicker==1.6.0 soundfile==0.14.0 cffi==2.1.1 \
#     pycparser==3.12 ml_collections==1.1.0 librosa==0.11.0 audioread==3.1.0 \
#     decorator==5.3.1 pooch==1.9.0 platformdirs==4.14.5 soxr==1.1.0
#
# Records go to $OUT (the device tool brings them back); copy them into
# benchmarks/results/<device slug>/ and run tools/bench_table.py --readme benchmarks/README.md.
# Locally, `DEVICE=cpu SIZE=tiny WHEELS=none TEST_PLATFORMS=cpu PYTHON=.venv/bin/python
# OUT=/tmp/x bash tools/gpu_session.sh fp32` runs the same flow
# on tiny models (a check of this script, not a measurement).
set -uo pipefail
cd "$(dirname "$0")/.."
stage="${1:?stage: fp32, extras, lowp or cache}"
OUT="${OUT:-$PWD/gpu-results}"
DEVICE="${DEVICE:-gpu}"
SIZE="${SIZE:-paper}"
PY="${PYTHON:-python3}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
WHEELS="${WHEELS:-.whl}"  # WHEELS=none: use what is installed (the local check below)
if compgen -G "$WHEELS/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/jaxsep-site "$WHEELS"/*.whl || exit 1
  export PYTHONPATH="/tmp/jaxsep-site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
bench() { "$PY" -c 'import sys; from jaxsep.cli import main; sys.exit(main())' bench "$@"; }
log="$OUT/$stage.log"
{
  echo "== $stage $(date -u +%FT%TZ) device=$DEVICE size=$SIZE"
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  "$PY" -c 'import jax, torch; print("jax", jax.__version__, jax.devices(), "torch", torch.__version__)'
  case "$stage" in
    fp32)
      # on the GPU (the tests default to JAX_PLATFORMS=cpu): the cuDNN LSTM tests, and the bench
      # harness with both frameworks on the device
      JAX_PLATFORMS="${TEST_PLATFORMS:-cuda,cpu}" "$PY" -m pytest -q -p no:cacheprovider \
        tests/test_lstm.py -m gpu 2>&1 | tail -5
      JAX_PLATFORMS="${TEST_PLATFORMS:-cuda,cpu}" "$PY" -m pytest -q -p no:cacheprovider \
        tests/test_bench.py tests/test_bench_timing.py -k "not without_librosa" 2>&1 | tail -15
      for m in xumx umx chimera vqvae vggish; do
        bench "$m" --device "$DEVICE" --size "$SIZE" --precision fp32 -o "$OUT/fp32.jsonl"
      done
      ;;
    extras)
      if [ "$SIZE" = paper ]; then
        "$PY" tools/bench_xumx_cpu.py --seconds 180 --reps 5 --batch-size 8 -o "$OUT/rtf.jsonl"
      fi
      nproc
      bench pipeline --size "$SIZE" -o "$OUT/pipeline.jsonl"
      ;;
    cache)
      # fresh processes compiling vs loading from the persistent cache; its own call: twelve
      # processes, each compiling the full-size X-UMX on the GPU (autotuning included)
      config=configs/xumx.py; [ "$SIZE" = paper ] || config=configs/xumx.py:tiny
      "$PY" tools/bench_compile_cache.py --repeats 2 --config "$config" -o "$OUT/compile_cache.jsonl"
      ;;
    lowp)
      for p in tf32 bf16; do
        for m in xumx umx chimera vqvae vggish; do
          bench "$m" --device "$DEVICE" --size "$SIZE" --precision "$p" -o "$OUT/$p.jsonl"
        done
      done
      ;;
    *) echo "unknown stage $stage (fp32, extras, lowp, cache)"; exit 2 ;;
  esac
  echo "== done $(date -u +%FT%TZ)"
} 2>&1 | tee "$log"
