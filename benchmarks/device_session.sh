#!/usr/bin/env bash
# One GPU session for rlsdk's Triton kernels: every GPU check and the benchmarks in one command.
#
# How to call it: first, here (a machine that reaches PyPI), `bash benchmarks/fetch_wheels.sh`; then
# through the device tool's `run` verb, from the repo root, in two calls that together fit a
# 15-minute (900 s) device budget, of which the first start takes one to two minutes:
#
#     command: DEADLINE=560 bash benchmarks/device_session.sh tests bench_a bench_b   carry: [".whl"]  timeout_s: 590
#
# then at once, on the warm machine, with B = lease.budget_left_s of that reply and the steps that
# call 1 left unfinished (its summary says which were skipped or timed out) first:
#
#     command: DEADLINE=$((B - 40)) bash benchmarks/device_session.sh [unfinished] tune tests_all
#                                                                     carry: [".whl"]  timeout_s: B - 20
#
# and give the machine back. DEADLINE must stay below timeout_s: then the script ends by itself and
# its summary comes back (a command killed at the tool's limit returns only the logs written so far).
#
# Steps: tests (the real-size checks of tests/test_kernels_gpu.py), bench_a and bench_b
# (benchmarks/kernels.py at each shape), tune (benchmarks/tune_kernels.py) and tests_all (the other
# tests/test_kernels_*.py files, interpreter-tested on the CPU, compiled for the GPU). With no step
# named it runs all five in that order.
#
# It stops by itself within DEADLINE seconds (default 540: every step has a `timeout`, so a hang or a
# slow peer only cuts its own step short; a step that would get under 15 s is skipped). Steps, each
# logged to a file under $OUT (at most 7 files):
#
#     setup.log      nvidia-smi, python/torch/triton versions, installs, import and plugin check
#     gpu_tests.log  pytest tests/test_kernels_gpu.py on the GPU (TRITON_INTERPRET unset)
#     all_tests.log  pytest of the other tests/test_kernels_*.py files, compiled for the GPU
#     tune.log       benchmarks/tune_kernels.py (logprob and fused-loss sweeps, shape a)
#     bench_a.log    benchmarks/kernels.py --shapes a   (N=8192, H=4096, V=128256)
#     bench_b.log    benchmarks/kernels.py --shapes b   (N=16384, H=2048, V=151936)
#     summary.txt    each step's exit status and time, the test tally, the headline rows
#
# Installation there (python3 3.12 with torch and triton, no package registry):
# - the carried wheels (.whl/: omegaconf, antlr4-python3-runtime, liger-kernel, cut-cross-entropy)
#   go to $SITE (/tmp/site) with `pip install --no-index --no-deps --target`;
# - rlsdk runs from this checkout: PYTHONPATH=$SITE:sdk:plugins:kernels. Its plugins are found
#   through the entry points of an installed `rlsdk` distribution (sdk/rlsdk/plugins.py; the pytest11
#   entry point of rlsdk.testing too), so the distribution's metadata alone (rlsdk-*.dist-info) is put
#   in $SITE: built offline by pip from a copy of the checkout (--no-build-isolation with the image's
#   setuptools), or, should that fail, written from pyproject.toml. No rlsdk code is copied, so
#   tracebacks point at the checkout.
#
#     bash benchmarks/device_session.sh --setup-only   # install and check imports, then stop
#
# Elsewhere (a test run without a GPU) OUT defaults to a new temporary folder; PYTHON, SITE,
# DEADLINE and PYTEST_WORKERS (below) can be overridden from the environment.
set -uo pipefail

cd "$(dirname "$0")/.." || exit 1
ROOT=$PWD
PY=${PYTHON:-python3}
SITE=${SITE:-/tmp/site}
DEADLINE=${DEADLINE:-540}
OUT=${OUT:-$(mktemp -d /tmp/device_session.XXXXXX)}
SETUP_ONLY=0
STEPS=("$@")
[[ ${1:-} == --setup-only ]] && SETUP_ONLY=1 && STEPS=()
((${#STEPS[@]})) || STEPS=(tests bench_a bench_b tune tests_all)
for step in "${STEPS[@]}"; do
  [[ $step =~ ^(tests|tests_all|bench_a|bench_b|tune)$ ]] || {
    echo "unknown step $step: use tests, tests_all, bench_a, bench_b, tune"
    exit 2
  }
done

mkdir -p "$OUT" "$SITE"
unset TRITON_INTERPRET
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
export PYTHONPATH="$SITE:$ROOT/sdk:$ROOT/plugins:$ROOT/kernels"
SUMMARY=$OUT/summary.txt
: >"$SUMMARY"

# note TEXT: print TEXT and add it to the summary.
note() { echo "$*" | tee -a "$SUMMARY"; }

# left: seconds before DEADLINE.
left() { echo $((DEADLINE - SECONDS)); }

# run_step NAME CAP CMD...: run CMD for at most min(CAP, time left - 5) seconds, output tee'd to
# $OUT/NAME.log; its status goes to the summary. A failing step never stops the later ones.
run_step() {
  local name=$1 cap=$2
  shift 2
  local limit=$(($(left) - 5))
  ((cap < limit)) && limit=$cap
  if ((limit < 15)); then
    note "$name: skipped, $(left) s left"
    return 0
  fi
  echo
  echo "=== $name (at most ${limit} s): $*"
  local start=$SECONDS
  timeout -k 10 "$limit" "$@" 2>&1 | tee "$OUT/$name.log"
  local rc=${PIPESTATUS[0]} what
  what="exit $rc"
  ((rc == 124 || rc == 137)) && what="TIMED OUT at ${limit} s (exit $rc)"
  note "$name: $what, $((SECONDS - start)) s"
}

# install_rlsdk_metadata: rlsdk-*.dist-info (entry points) in $SITE; the code stays in the checkout.
install_rlsdk_metadata() {
  local src=/tmp/rlsdk-src dist=/tmp/rlsdk-dist
  rm -rf "$src" "$dist" "$SITE"/rlsdk-*.dist-info
  mkdir -p "$src"
  tar -C "$ROOT" --exclude=./.git --exclude=./.whl --exclude=./build --exclude='*.egg-info' -cf - . | tar -C "$src" -xf -
  if timeout 90 "$PY" -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --no-cache-dir \
    --target "$dist" "$src" && cp -r "$dist"/rlsdk-*.dist-info "$SITE"/; then
    echo "rlsdk metadata: built by pip from the checkout"
    return 0
  fi
  echo "pip could not build rlsdk offline: writing its metadata from pyproject.toml"
  timeout 60 "$PY" - "$ROOT/pyproject.toml" "$SITE" <<'EOF'
"""Write NAME-VERSION.dist-info (METADATA, entry_points.txt) for the [project] of pyproject.toml."""
import sys
import tomllib
from pathlib import Path

project = tomllib.loads(Path(sys.argv[1]).read_text())["project"]
info = Path(sys.argv[2]) / f"{project['name']}-{project['version']}.dist-info"
info.mkdir(parents=True, exist_ok=True)
(info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n")
groups = {**project.get("entry-points", {}), "console_scripts": project.get("scripts", {})}
text = "".join(f"[{g}]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items()) + "\n" for g, eps in groups.items() if eps)
(info / "entry_points.txt").write_text(text)
print(f"wrote {info}")
EOF
}

# check_imports: rlsdk from the checkout, its plugins discovered (strictly), the peers importable.
check_imports() {
  timeout 120 "$PY" - "$ROOT" <<'EOF'
import importlib
import importlib.metadata
import os
import sys

os.environ["RLSDK_STRICT_PLUGINS"] = "1"
import rlsdk
import rlsdk_kernels
import rlsdk_plugins
from rlsdk.plugins import get_registry

for module in (rlsdk, rlsdk_plugins, rlsdk_kernels):
    assert module.__file__.startswith(sys.argv[1]), f"{module.__name__} from {module.__file__}, not the checkout"
    print(f"{module.__name__}: {module.__file__}")
print("rlsdk distribution", importlib.metadata.version("rlsdk"))
registry = get_registry()
print("plugins:", ", ".join(p.label for p in registry.plugins))
assert "triton" in registry.names("logprob_backend"), registry.names("logprob_backend")
assert "fused_clipped_pg" in registry.names("loss"), registry.names("loss")
print("logprob backends:", ", ".join(registry.names("logprob_backend")))
ok = True
for name in ("omegaconf", "liger_kernel", "cut_cross_entropy"):
    try:
        module = importlib.import_module(name)
        print(f"{name}: {getattr(module, '__version__', 'ok')}")
    except Exception as exc:  # the benchmark skips a missing peer; omegaconf is needed by the trainer
        print(f"{name}: FAILED {type(exc).__name__}: {exc}")
        ok = ok and name != "omegaconf"
sys.exit(0 if ok else 1)
EOF
}

setup() {
  local rc=0
  echo "$(date -u +%FT%TZ) on $(hostname), repo $ROOT, logs in $OUT"
  timeout 30 nvidia-smi || echo "nvidia-smi: not available"
  timeout 60 "$PY" - <<'EOF'
import sys

import torch
import triton

print("python", sys.version.split()[0], sys.executable)
print("torch", torch.__version__, "CUDA", torch.version.cuda, "available:", torch.cuda.is_available())
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print(f"device {p.name}: {p.multi_processor_count} SMs, {p.total_memory / 2**30:.1f} GiB")
print("triton", triton.__version__)
EOF
  shopt -s nullglob
  local wheels=("$ROOT"/.whl/*.whl)
  if ((${#wheels[@]})); then
    timeout 90 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target "$SITE" "${wheels[@]}" || { echo "wheel install FAILED"; rc=1; }
    echo "installed ${#wheels[@]} wheels into $SITE"
  else
    echo "no .whl/*.whl: run benchmarks/fetch_wheels.sh and carry .whl (omegaconf and the peers are missing)"
    rc=1
  fi
  install_rlsdk_metadata || rc=1
  check_imports || rc=1
  return $rc
}

echo "=== setup"
start=$SECONDS
setup 2>&1 | tee "$OUT/setup.log"
note "setup: exit ${PIPESTATUS[0]}, $((SECONDS - start)) s"
((SETUP_ONLY)) && exit 0

# Compiling the many small kernel variants of the CPU test files is CPU-bound: with pytest-xdist (in
# the GPU image) the files run in PYTEST_WORKERS processes sharing the GPU, one file per process
# (--dist loadfile: the real-size tests, ~15 GiB each, never run side by side). PYTEST_WORKERS=0 runs
# them in one process. pytest-benchmark (also in the image) warns when xdist is active: an error
# under filterwarnings=error, so it is disabled then.
workers=()
if ((${PYTEST_WORKERS:-4} > 0)) && "$PY" -c "import xdist" 2>/dev/null; then
  workers=(-n "${PYTEST_WORKERS:-4}" --dist loadfile)
  "$PY" -c "import pytest_benchmark" 2>/dev/null && workers+=(-p no:benchmark)
fi
others=()  # the interpreter-tested files, compiled for the GPU this time
for file in tests/test_kernels_*.py; do
  [[ $file == tests/test_kernels_gpu.py ]] || others+=("$file")
done
for step in "${STEPS[@]}"; do
  case $step in
    tests) run_step gpu_tests 180 "$PY" -m pytest -q -p no:cacheprovider -rfEsP --durations=10 tests/test_kernels_gpu.py ;;
    tests_all) run_step all_tests 240 "$PY" -m pytest -q -p no:cacheprovider "${workers[@]}" -rfEs "${others[@]}" ;;
    bench_a) run_step bench_a 600 "$PY" benchmarks/kernels.py --shapes a ;;
    bench_b) run_step bench_b 600 "$PY" benchmarks/kernels.py --shapes b ;;
    tune) run_step tune 150 "$PY" benchmarks/tune_kernels.py ;;
  esac
done

{
  echo
  for log in gpu_tests all_tests; do
    [[ -f $OUT/$log.log ]] || continue
    echo "$log: $(grep -E '^=*.*[0-9]+ (passed|failed|error)' "$OUT/$log.log" | tail -n 1)"
    grep -E '^(FAILED|ERROR) ' "$OUT/$log.log" | head -n 20
  done
  echo "fastest configurations (logprob, fused loss):"
  grep -A 4 -E '^\| (matmul|op) ' "$OUT/tune.log" 2>/dev/null | grep -vE '^(\|---|--$)'
  for shape in a b; do
    echo "shape $shape:"
    grep -E 'matmul|floor|^\||^- ' "$OUT/bench_$shape.log" 2>/dev/null | grep -vE '^\|(---|.* method \|| GRPO loss, fwd)'
  done
  echo "total: ${SECONDS} s"
} >>"$SUMMARY"
echo
echo "=== summary ($OUT/summary.txt)"
cat "$SUMMARY"
