#!/bin/bash
# Submit the whole pipeline to SLURM from one command (run it on a login node, from any folder):
#   sbatch/submit_pipeline.sh --datalist nifti/datalist.json --work_dir /scratch/$USER/work_dir \
#       --slurm_partition gpu --slurm_time 2-00:00:00 [--test_manifest test_crop_manifest.csv] [...]
# It is run_auto3dseg.py --mode slurm with this project's Python: prep (analyze + generate), one
# array task per (network, fold), then ensemble and submission; logs in <work_dir>/logs/. Run the
# same command again after a failure, a cancel or a time limit: it submits only what is unfinished.
# Resources: --slurm_gpus/--slurm_cpus/--slurm_mem/--slurm_time/--slurm_partition/--slurm_account/
# --slurm_qos/--slurm_args, or AUTO3DSEG_SLURM_<NAME> in the environment; --dry_run shows the jobs.
set -euo pipefail
PROJECT=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)
PY=${PY:-$PROJECT/.venv/bin/python}
[ -x "$PY" ] || { echo "error: $PY not found: run 'make venv' in $PROJECT, or set PY to a Python with the project installed" >&2; exit 2; }
exec "$PY" "$PROJECT/run_auto3dseg.py" --mode slurm "$@"
