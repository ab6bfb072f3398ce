#!/usr/bin/env bash
# GPU figures in one shot (issue 21): on the built-in data with the bundles' own configs (patch
# sizes derived from the data, and each network's default patch), in under 8 minutes on one H100:
#   * segresnet, dints, swinunetr: s/iter with AMP, peak GPU memory, validation sliding-window time;
#   * MONAI's official segresnet (../shared, or the carried copy) at the same patch and batch:
#     ours/official ratios (training step and sliding-window inferer, step-level);
#   * torchrun: 2 processes (NCCL) against 1 with the same per-rank losses, equal within 1e-4
#     (with one GPU: torchrun + NCCL with 1 process, and the 2-GPU check is reported as skipped);
#   * run_auto3dseg.py --mode full --gpus 1 on the demo data, which must end with submission.zip.
# A Markdown table (device name first) goes to stdout and, when $OUT is set, to $OUT/gpu_check.md
# (+ gpu_check.json, gpu_check_logs.txt). The measuring code is bench/gpu_check.py.
#
# Usage:
#   bash bench/gpu_check.sh --prepare-carry   HERE, before a device run (needs PyPI): wheels of the
#        project's dependencies that the device image lacks, at the versions of this .venv (pinned:
#        cp312 manylinux x86-64), and a copy of ../shared/monai_official_templates, under
#        bench/out/gpu_check_carry (ignored by git, ~24 MiB)
#   bash bench/gpu_check.sh                   on a machine with CUDA; with the device tool:
#        run(command="bash bench/gpu_check.sh", carry=["bench/out/gpu_check_carry"], timeout_s=540)
#   bash bench/gpu_check.sh --cpu-dry-run     the same code paths on the CPU with tiny networks and
#        patches (about 3 minutes on 2 cores; tests/test_gpu_check.py runs it). Its figures are CPU
#        dry-run figures, never GPU figures.
# Other options go to bench/gpu_check.py (--work DIR: its scratch folder, default bench/out/gpu_check).
# Environment: PYTHON (default: .venv/bin/python for the dry run, python3 on a GPU machine: the
# device image's python3 holds a CUDA build of torch), GPU_CHECK_CARRY (default
# bench/out/gpu_check_carry), GPU_CHECK_SITE (where carried wheels are installed, default
# /tmp/gpu_check_site), GPU_CHECK_OFFICIAL (the official templates, default ../shared/... or the
# carried copy). Nothing is installed but the carried, pinned wheels, and only on a GPU run (or with
# GPU_CHECK_INSTALL=1: the device's setup tried on a CPU, e.g. with wheels prepared with
# GPU_CHECK_PYVER=3.11 GPU_CHECK_CARRY=DIR for a Python 3.11 that holds only the image's packages).
# Time on a lent device: machine start (1-2 min) + this run (setup ~20 s, measuring ~5-6 min, a
# hard deadline of 480 s from the start of this script) fits the 15 minutes; a failure at setup
# returns at once and leaves time to rerun.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
START=$(date +%s)
CARRY=${GPU_CHECK_CARRY:-$ROOT/bench/out/gpu_check_carry}
# the project's dependencies (and theirs) that the device image lacks (.library/device/KINDS.md,
# package list of 2026-11-17); torch, numpy, scipy, scikit-image, ... are the image's own
CARRY_PACKAGES="monai nibabel zarr numcodecs deprecated asciitree fasteners connected-components-3d fastremap edt
fire termcolor jsonschema jsonschema-specifications referencing rpds-py"
# what the pipeline imports (pyproject.toml's dependencies), checked before anything runs
IMPORTS="torch monai numpy zarr numcodecs nibabel tifffile skimage cc3d fastremap edt yaml fire jsonschema tqdm
matplotlib psutil einops"
mode=gpu
for arg in "$@"; do
  case $arg in
    --cpu-dry-run) mode=dry ;;
    --prepare-carry) mode=prepare ;;
  esac
done
if [ -n "${PYTHON:-}" ]; then
  PY=$PYTHON
elif [ "$mode" != gpu ] && [ -x .venv/bin/python ]; then
  PY=.venv/bin/python
else
  PY=python3
fi
export PYTHONUNBUFFERED=1

if [ "$mode" = prepare ]; then  # here, with PyPI: what the device image lacks, pinned to this .venv's versions
  pins=$("$PY" -c 'import importlib.metadata as m, sys; print(" ".join(f"{n}=={m.version(n)}" for n in sys.argv[1:]))' \
    $CARRY_PACKAGES) || exit 2
  rm -rf "$CARRY/wheels" "$CARRY/official" && mkdir -p "$CARRY/wheels" || exit 2
  platforms=()
  for p in manylinux_2_28 manylinux_2_27 manylinux_2_24 manylinux_2_17 manylinux2014 manylinux1; do
    platforms+=(--platform "${p}_x86_64")
  done
  # shellcheck disable=SC2086 # $pins is a list of NAME==VERSION
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "${GPU_CHECK_PYVER:-3.12}" --implementation cp \
    "${platforms[@]}" -d "$CARRY/wheels" $pins || { echo "error: pip download failed" >&2; exit 2; }
  if [ -d ../shared/monai_official_templates ]; then
    cp -r ../shared/monai_official_templates "$CARRY/official" \
      && find "$CARRY/official" -name __pycache__ -prune -exec rm -rf {} +
  else
    echo "warning: ../shared/monai_official_templates absent: the device run will skip the official template" >&2
  fi
  echo "carried: $CARRY ($(du -sh "$CARRY" | cut -f1)): $pins"
  echo 'device call: run(command="bash bench/gpu_check.sh", carry=["bench/out/gpu_check_carry"], timeout_s=540)'
  exit 0
fi

if [ "$mode" = gpu ] || [ "${GPU_CHECK_INSTALL:-0}" = 1 ]; then
  [ "$mode" = gpu ] && command -v nvidia-smi >/dev/null && nvidia-smi -L
  if compgen -G "$CARRY/wheels/*.whl" >/dev/null; then
    SITE=${GPU_CHECK_SITE:-/tmp/gpu_check_site}
    echo "setup: installing the carried pinned wheels into $SITE:" $(cd "$CARRY/wheels" && ls *.whl)
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
      "$CARRY"/wheels/*.whl || { echo "error: could not install the carried wheels" >&2; exit 3; }
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
  else
    echo "setup: no carried wheels in $CARRY/wheels: using $PY's packages as they are"
  fi
fi
if [ "$mode" = dry ]; then
  # one thread per process: 2 threads on 2 shared cores made a 32^3 forward 30x slower under load
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1}
  echo "setup: CPU dry run, $OMP_NUM_THREADS thread(s) a process"
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
# shellcheck disable=SC2086 # $IMPORTS is a list of module names
if ! "$PY" -c 'import importlib, sys; [importlib.import_module(m) for m in sys.argv[1:]]' $IMPORTS; then
  echo "error: $PY lacks what the pipeline imports (above). For a device: bash bench/gpu_check.sh --prepare-carry" \
    "here (with PyPI), then carry bench/out/gpu_check_carry; elsewhere: pip install -e ." >&2
  exit 2
fi
echo "setup: $(( $(date +%s) - START )) s ($("$PY" -c 'import sys; print(sys.executable, sys.version.split()[0])'))"
exec "$PY" bench/gpu_check.py "$@" --started "$START"
