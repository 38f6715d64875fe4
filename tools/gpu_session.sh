#!/usr/bin/env bash
# One GPU session: turn a lent GPU's minutes into paper results that come back as at most 8 files.
#
# On the lent machine (bare: python3 with torch, no papermill, no network, no ../shared), after
# `make carry` here, through the device tool's `run` with carry [".carry"]:
#   OUT=$OUT LTBENCH_SESSION_PROFILE=paper LTBENCH_SESSION_SECONDS=420 bash tools/gpu_session.sh
# CPU rehearsal (what tests/test_session.py runs):
#   PYTHON=.venv/bin/python OUT=/tmp/out LTBENCH_RESULTS=/tmp/res LTBENCH_SESSION_PROFILE=smoke \
#   LTBENCH_SESSION_SECONDS=150 LTBENCH_SESSION_ONLY=01 LTBENCH_DATA=../shared/data bash tools/gpu_session.sh
# Back here: python -m ltbench import <files>; python -m ltbench run ...; python -m ltbench report.
#
# Steps: data (.carry/cifar10.tgz unpacked under /tmp, else $LTBENCH_DATA; none: exit 2 at once),
# versions and nvidia-smi, resume state from .carry/state, smoke check of every method (eager and
# torch.compile, at most LTBENCH_SESSION_SMOKE_SECONDS), throughput benchmark, `ltbench execute`
# tier by tier with a deadline that leaves LTBENCH_SESSION_MARGIN seconds to pack, pack into $OUT.
#
# Settings (environment): OUT (required), LTBENCH_SESSION_PROFILE (paper), LTBENCH_SESSION_SECONDS
# (420: the whole script, pack included), LTBENCH_RESULTS (results), LTBENCH_SESSION_CARRY (.carry),
# LTBENCH_SESSION_ONLY (notebooks, e.g. 01,04; default all), LTBENCH_SESSION_TIERS ("0 1 2"),
# LTBENCH_SESSION_SEEDS (1), LTBENCH_SESSION_WORKERS (4 on CUDA, 1 on CPU), LTBENCH_SESSION_DEVICE
# (auto), LTBENCH_SESSION_COMPILE (0; 1: execute with torch.compile), LTBENCH_SESSION_SMOKE_SECONDS
# (90; 0 skips), LTBENCH_SESSION_SMOKE_MODES (eager,fast on CUDA; eager on CPU), LTBENCH_SESSION_FAST
# (auto: execute --fast when the smoke check's fast mode passed; 1; 0), LTBENCH_SESSION_PACK (K: --pack K),
# LTBENCH_SESSION_BENCH_ROWS / _PACKS (benchmark rows, default dataloader,eager,graph,packs and 8),
# LTBENCH_SESSION_BENCH_SECONDS (60; 0 skips), LTBENCH_SESSION_BENCH_STEPS (200 on CUDA, 3 on CPU),
# LTBENCH_SESSION_MARGIN (60 on CUDA, 15 on CPU: the deadline is LTBENCH_SESSION_SECONDS minus it),
# LTBENCH_SESSION_HARD_SECONDS (LTBENCH_SESSION_SECONDS + 40: a training call still running 15 s before
# it is interrupted; keep the device call's timeout_s above it), PYTHON (python3).
# Exit: 0 all went well; 1 a smoke run, a training run or the pack failed (files still packed);
# 2 no data or a bad setting (logs packed).
set -uo pipefail

START=$SECONDS
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 2
: "${OUT:?set OUT to the folder whose files come back}"
mkdir -p "$OUT" || exit 2
OUT="$(cd "$OUT" && pwd)"
PY="${PYTHON:-python3}"
PROFILE="${LTBENCH_SESSION_PROFILE:-paper}"
BUDGET="${LTBENCH_SESSION_SECONDS:-420}"
HARD="${LTBENCH_SESSION_HARD_SECONDS:-$(( ${BUDGET//[!0-9]/} + 40 ))}"
RESULTS="${LTBENCH_RESULTS:-results}"
CARRY="${LTBENCH_SESSION_CARRY:-.carry}"
ONLY="${LTBENCH_SESSION_ONLY:-}"
TIERS="${LTBENCH_SESSION_TIERS:-0 1 2}"
SEEDS="${LTBENCH_SESSION_SEEDS:-1}"
for v in "LTBENCH_SESSION_SECONDS=$BUDGET" "LTBENCH_SESSION_HARD_SECONDS=$HARD" "LTBENCH_SESSION_SEEDS=$SEEDS" \
         "LTBENCH_SESSION_SMOKE_SECONDS=${LTBENCH_SESSION_SMOKE_SECONDS:-0}" \
         "LTBENCH_SESSION_BENCH_SECONDS=${LTBENCH_SESSION_BENCH_SECONDS:-0}" \
         "LTBENCH_SESSION_MARGIN=${LTBENCH_SESSION_MARGIN:-0}" "LTBENCH_SESSION_SMOKE_GRACE=${LTBENCH_SESSION_SMOKE_GRACE:-0}" "LTBENCH_SESSION_WORKERS=${LTBENCH_SESSION_WORKERS:-1}"; do
  case "${v#*=}" in
    ''|*[!0-9]*) echo "error: ${v%%=*}=${v#*=}: expected a whole number of seconds / a count"; exit 2 ;;
  esac
done
WORK="$(mktemp -d /tmp/ltbench-session.XXXXXX)"
LOGS="$WORK/logs"
mkdir -p "$LOGS" "$WORK/cache" "$WORK/inductor" "$WORK/triton" "$WORK/mpl" "$WORK/xdg"

export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
export LTBENCH_CACHE="${LTBENCH_CACHE:-$WORK/cache}"
export TORCHINDUCTOR_CACHE_DIR="$WORK/inductor" TRITON_CACHE_DIR="$WORK/triton" CUDA_CACHE_PATH="$WORK/cuda"
export MPLCONFIGDIR="$WORK/mpl" XDG_CACHE_HOME="$WORK/xdg" TORCH_HOME="$WORK/xdg/torch"
export TQDM_DISABLE=1

exec > >(tee -a "$LOGS/session.log") 2>&1

STATUS=0
PACKED=0
PHASES=""
phase() { PHASES="$PHASES$1@$(( SECONDS - START ))s "; echo "== [$(( SECONDS - START ))s] $1 ${2:-}"; }
left() { echo $(( BUDGET - (SECONDS - START) - MARGIN )); }

do_pack() {
  [ "$PACKED" = 1 ] && return
  PACKED=1
  phase "pack"
  "$PY" - "$WORK/extra.json" <<EOF
import json, sys
gpu = open("$WORK/device.name").read().strip() if __import__("os").path.exists("$WORK/device.name") else None
json.dump({"session": {"profile": "$PROFILE", "device": "${DEV:-unknown}", "gpu": gpu, "budget_s": $BUDGET,
           "seconds_at_pack": $(( SECONDS - START )), "phases": "$PHASES".split(), "status_so_far": $STATUS,
           "tiers": "$TIERS", "only": "$ONLY", "workers": "${WORKERS:-}"}}, open(sys.argv[1], "w"))
EOF
  local norun=()
  [ -f "$WORK/snapshot.json" ] || norun=(--no-runs)  # stopped before the session began: no run is new
  if ! "$PY" -m ltbench.ops pack --profile "$PROFILE" --results "$RESULTS" --out "$OUT" \
      --before "$WORK/snapshot.json" --logs "$LOGS" --bench "$WORK/benchmark.csv" --seeds "$SEEDS" \
      --extra "$WORK/extra.json" "${norun[@]}"; then
    echo "error: pack failed; packing the logs alone"
    STATUS=1
    rm -f "$OUT"/*.tgz.tmp
    tar czf "$OUT/logs.tgz" -C "$WORK" logs 2>/dev/null
  fi
  echo "== [$(( SECONDS - START ))s] session done (exit $STATUS): $(ls "$OUT" | tr '\n' ' ')"
}
cleanup() {
  # A lent machine is discarded after the call: leave /tmp as it is there; clean up a rehearsal.
  [ "${DEV:-cpu}" = cpu ] && rm -rf "$WORK"
}
trap 'do_pack; cleanup; exit $STATUS' EXIT

phase start "profile $PROFILE, budget ${BUDGET}s, results $RESULTS, out $OUT"

# The runs record the commit of the code they ran (the checkout here has no .git; make carry wrote it).
if [ -z "${LTBENCH_COMMIT:-}" ] && [ -f "$CARRY/COMMIT" ]; then export LTBENCH_COMMIT="$(cat "$CARRY/COMMIT")"; fi

# -- data: fail fast -------------------------------------------------------------------------
if [ -f "$CARRY/cifar10.tgz" ]; then
  mkdir -p "$WORK/data"
  if ! tar xzf "$CARRY/cifar10.tgz" -C "$WORK/data"; then
    echo "error: could not unpack $CARRY/cifar10.tgz"; STATUS=2; exit 2
  fi
  export LTBENCH_DATA="$WORK/data"
  echo "data: unpacked $CARRY/cifar10.tgz into $LTBENCH_DATA"
elif [ -n "${LTBENCH_DATA:-}" ] && [ -d "$LTBENCH_DATA/cifar10/train" ]; then
  echo "data: $LTBENCH_DATA (LTBENCH_DATA)"
else
  echo "error: no CIFAR-10: neither $CARRY/cifar10.tgz (run 'make carry' and name .carry in the device call's carry)" \
       "nor \$LTBENCH_DATA/cifar10/train (LTBENCH_DATA=${LTBENCH_DATA:-unset}); nothing was trained"
  STATUS=2; exit 2
fi
for split in train test; do
  if [ ! -d "$LTBENCH_DATA/cifar10/$split" ]; then
    echo "error: $LTBENCH_DATA/cifar10/$split is missing"; STATUS=2; exit 2
  fi
done

# -- versions ----------------------------------------------------------------------------------
phase "versions"
LTBENCH_SESSION_DEVFILE="$WORK/device" "$PY" - > "$LOGS/versions.txt" 2>&1 <<'EOF'
import importlib, os, platform, sys
print("python", sys.version.replace("\n", " "))
print("platform", platform.platform(), "| cpus", os.cpu_count())
for name in ("torch", "torchvision", "timm", "numpy", "pandas", "matplotlib", "seaborn", "tqdm", "papermill"):
    try:
        print(name, importlib.import_module(name).__version__)
    except Exception as exc:
        print(name, "missing", type(exc).__name__)
import torch
print("cuda available", torch.cuda.is_available(), "| torch cuda", torch.version.cuda,
      "| cudnn", torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None)
open(os.environ["LTBENCH_SESSION_DEVFILE"], "w").write("cuda" if torch.cuda.is_available() else "cpu")
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    open(os.environ["LTBENCH_SESSION_DEVFILE"] + ".name", "w").write(p.name)
    print("gpu", p.name, f"cc {p.major}.{p.minor}", f"{p.total_memory / 2**30:.1f} GiB", f"{p.multi_processor_count} SMs")
EOF
cat "$LOGS/versions.txt"
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi > "$LOGS/nvidia-smi.txt" 2>&1
  head -n 12 "$LOGS/nvidia-smi.txt"
else
  echo "nvidia-smi: not found" > "$LOGS/nvidia-smi.txt"
fi

DEV="${LTBENCH_SESSION_DEVICE:-auto}"
if [ "$DEV" = auto ]; then
  DEV=$(cat "$WORK/device" 2>/dev/null || echo cpu)
fi
if [ "${DEV%%:*}" = cuda ]; then
  WORKERS="${LTBENCH_SESSION_WORKERS:-4}"; MARGIN="${LTBENCH_SESSION_MARGIN:-60}"
  SMOKE_MODES="${LTBENCH_SESSION_SMOKE_MODES:-eager,fast}"; BENCH_STEPS="${LTBENCH_SESSION_BENCH_STEPS:-100}"
  BENCH_WARMUP=10; BENCH_WORKERS=4; MIN_EXEC=20; BENCH_ROWS="${LTBENCH_SESSION_BENCH_ROWS:-dataloader,eager,graph,packs}"
else
  WORKERS="${LTBENCH_SESSION_WORKERS:-1}"; MARGIN="${LTBENCH_SESSION_MARGIN:-15}"
  SMOKE_MODES="${LTBENCH_SESSION_SMOKE_MODES:-eager}"; BENCH_STEPS="${LTBENCH_SESSION_BENCH_STEPS:-3}"
  BENCH_WARMUP=1; BENCH_WORKERS=0; MIN_EXEC=5; BENCH_ROWS="${LTBENCH_SESSION_BENCH_ROWS:-dataloader,eager}"
fi
SMOKE_S="${LTBENCH_SESSION_SMOKE_SECONDS:-90}"
SMOKE_GRACE="${LTBENCH_SESSION_SMOKE_GRACE:-60}"  # a smoke run still going this long after the budget fails
BENCH_S="${LTBENCH_SESSION_BENCH_SECONDS:-120}"
echo "device $DEV, workers $WORKERS, pack margin ${MARGIN}s"

# -- resume state --------------------------------------------------------------------------------
phase "restore"
if ! "$PY" -m ltbench.ops restore --carry "$CARRY" --results "$RESULTS" --profile "$PROFILE" \
    --snapshot "$WORK/snapshot.json"; then
  echo "error: cannot restore into or read the run store $RESULTS/$PROFILE"; STATUS=2; exit 2
fi

# Decode the training data once, in the background, while the smoke check runs on synthetic data.
"$PY" -c "from ltbench.data import build_long_tailed; build_long_tailed('cifar10', 100, download=False)" \
  > "$LOGS/data_cache.log" 2>&1 &
WARM=$!

# -- smoke check ---------------------------------------------------------------------------------
if [ "$SMOKE_S" -gt 0 ]; then
  phase smoke "(${SMOKE_S}s, $SMOKE_MODES)"
  if ! timeout -k 10 $(( SMOKE_S + SMOKE_GRACE + 30 )) "$PY" -m ltbench.ops smoke --device "$DEV" \
      --budget "$SMOKE_S" --grace "$SMOKE_GRACE" --modes "$SMOKE_MODES" --out "$LOGS/smoke.json"; then
    echo "warning: the smoke check failed (see logs/smoke.json); training goes on, the session will exit 1"
    STATUS=1
  fi
fi
wait $WARM || echo "warning: decoding CIFAR-10 failed (see logs/data_cache.log)"

# -- throughput benchmark -----------------------------------------------------------------------
if [ "$BENCH_S" -gt 0 ] && [ -f benchmarks/throughput.py ]; then
  phase benchmark "(${BENCH_S}s at most)"
  BENCH_ARGS=(--device "$DEV" --steps "$BENCH_STEPS" --warmup "$BENCH_WARMUP" --workers "$BENCH_WORKERS" --out "$WORK/benchmark.csv"
              --rows "$BENCH_ROWS" --packs "${LTBENCH_SESSION_BENCH_PACKS:-8}")
  timeout -k 5 "$BENCH_S" "$PY" benchmarks/throughput.py "${BENCH_ARGS[@]}" 2>&1 | tee "$LOGS/benchmark.txt" \
    || echo "warning: the benchmark did not finish in ${BENCH_S}s"
  if [ "${LTBENCH_SESSION_BENCH_COMPILE:-0}" = 1 ] && [ "$(left)" -gt $(( BENCH_S + MIN_EXEC )) ]; then
    timeout -k 5 "$BENCH_S" "$PY" benchmarks/throughput.py "${BENCH_ARGS[@]}" --compile 2>&1 \
      | tee -a "$LOGS/benchmark.txt" || echo "warning: the compiled benchmark did not finish in ${BENCH_S}s"
  fi
fi

# -- training, most valuable first ----------------------------------------------------------------
EXTRA=()
[ -n "$ONLY" ] && EXTRA+=(--only ${ONLY//,/ })
[ "${LTBENCH_SESSION_COMPILE:-0}" = 1 ] && EXTRA+=(--compile)
# The whole-step fast path (issue 14) trains only where the smoke check showed it works on this device
# (LTBENCH_SESSION_FAST: auto, 1 or 0); packing (LTBENCH_SESSION_PACK=K) only when asked.
FAST="${LTBENCH_SESSION_FAST:-auto}"
if [ "$FAST" = auto ]; then
  FAST=$("$PY" -c 'import json,sys; r=json.load(open(sys.argv[1])); print(1 if r.get("fast_path") == "ok" else 0)' \
         "$LOGS/smoke.json" 2>/dev/null || echo 0)
fi
[ "$FAST" = 1 ] && EXTRA+=(--fast) && echo "execute: on the fast path (whole-step graph)"
[ -n "${LTBENCH_SESSION_PACK:-}" ] && EXTRA+=(--pack "$LTBENCH_SESSION_PACK")
for tier in $TIERS; do
  L=$(left)
  if [ "$L" -lt "$MIN_EXEC" ]; then
    echo "tier $tier: not started (${L}s left before packing)"
    continue
  fi
  phase "tier$tier" "execute (deadline ${L}s)"
  # Hard stop (a hung run): 15 s before LTBENCH_SESSION_HARD_SECONDS, keeping time to pack.
  timeout -s INT -k 10 $(( HARD - (SECONDS - START) - 15 )) "$PY" -m ltbench execute --profile "$PROFILE" --results "$RESULTS" \
    --tiers "$tier" --deadline "$L" --workers "$WORKERS" --device "$DEV" --no-progress --seeds "$SEEDS" \
    -p 'datasets=["cifar10"]' "${EXTRA[@]}" 2>&1 | tee -a "$LOGS/execute.log"
  rc=${PIPESTATUS[0]}
  if [ "$rc" = 2 ]; then
    echo "error: execute refused the configuration or found no data (exit 2); stopping"
    STATUS=2; exit 2
  elif [ "$rc" != 0 ]; then
    echo "warning: execute tier $tier exited $rc (failed runs are listed above)"
    STATUS=1
  fi
done

exit $STATUS
