"""The whole CellMap pipeline at growing sizes: each step's time, memory and bytes, how they grow,
and what they project to at the challenge's real size.

For each ``--scales`` value N, ``python -m converters.cellmap.synthetic --scale N`` writes a CellMap tree
with about N times the demo's voxels (48 classes, partial annotations, test crops at mixed
resolutions); then, each step in a fresh process as a user runs it:

    convert   converters.cellmap.convert (--workers 2)
    analyze   run_auto3dseg.py --mode analyze (DataAnalyzer, --workers 2)
    generate  --mode generate (segresnet, 2 folds)
    train     --mode train: a fixed short training (2 folds x TRAIN_ITERATIONS iterations, small
              network, validation over each fold's crops once): its data-dependent costs grow
    ensemble  --mode ensemble (block-wise sliding windows, probability maps written as Zarr)
    submit    --mode submit (post-processing class by class, placement, Zarr store, zip)
    score     python -m auto3dseg.evaluation.score --rules official

Per step: wall seconds, CPU seconds, peak resident memory of the process tree (sampled) and of
its largest process (exact), bytes written, and the ratio to a floor measured in the same run:
reading the step's input files and writing as many bytes as it wrote. Growth: the exponent k
of ``cost ∝ voxels^k`` between consecutive sizes. Projection: each step's time at the real
challenge's voxel count, linear from the largest size (k clamped at 1 from below, so fixed
costs at small sizes do not flatter it), on this machine, on a 16-core node (Amdahl from the
cores the step kept busy here) and, for the network steps, on one GPU from a stated throughput.

Usage::

    python bench/bench_scale.py --scales 16 64 256 --work /tmp/bench_scale --json bench/scale.json

The Markdown report goes to stdout (paste it into bench/RESULTS.md with the machine line).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import dir_bytes, floor_io, run_measured  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
STEPS = ("convert", "analyze", "generate", "train", "ensemble", "submit", "score")
TRAIN_ITERATIONS = 4
TRAIN = ["--algos", "segresnet", "--override", "num_workers=2", "--override",
         f"num_iterations_per_epoch={TRAIN_ITERATIONS}", "--override", "segresnet:network#init_filters=8",
         "--override", "segresnet:network#dsdepth=2", "--override", "sw_batch_size=4"]

#: the real challenge, for the projection (see the report for where each figure comes from)
REAL = {"train_crops": 289, "test_crops": 16, "train_voxels": 2.6e10, "test_voxels": 3.5e9}
#: assumed GPU throughputs (voxels per second) for the network steps, see the report
GPU_INFER_VOX_S = 3.0e7
GPU_TRAIN_ITER_S = 0.35


def _commands(n: float, d: Path, big: int = 0) -> dict[str, tuple[list[str], list[Path], list[Path]]]:
    """Per step: command, input paths (for the floor) and output paths (bytes written). The big
    crop's dataset holds only a test crop, so the converter finds its store under --data_root."""
    synth, nifti, work = d / "synth", d / "nifti", d / "work"
    run = [PY, str(ROOT / "run_auto3dseg.py")]
    return {
        "convert": ([PY, "-m", "converters.cellmap.convert", "--datasplit", str(synth / "datasplit.csv"),
                     "--test_manifest", str(synth / "test_crop_manifest.csv"), "--output_dir", str(nifti),
                     "--num_folds", "2", "--workers", "2", *(["--data_root", str(synth)] if big else [])],
                    [synth], [nifti]),
        "analyze": ([*run, "--mode", "analyze", "--datalist", str(nifti / "datalist.json"), "--work_dir", str(work),
                     "--workers", "2"], [nifti], [work]),
        "generate": ([*run, "--mode", "generate", "--datalist", str(nifti / "datalist.json"), "--work_dir",
                      str(work), "--algos", "segresnet", "--num_fold", "2", "--num_epochs", "1", "--patch_size",
                      "64"], [work / "datastats.yaml"], [work]),
        "train": ([*run, "--mode", "train", "--work_dir", str(work), *TRAIN], [nifti / "images", nifti / "labels"],
                  [work]),
        "ensemble": ([*run, "--mode", "ensemble", "--work_dir", str(work), "--algos", "segresnet",
                      *(["--ensemble_method", "best_n", "--n_best", "1"] if big else [])],
                     [nifti / "images"], [work / "ensemble_output"]),
        "submit": ([*run, "--mode", "submit", "--work_dir", str(work), "--test_manifest",
                    str(synth / "test_crop_manifest.csv")], [work / "ensemble_output"], [work / "submission"]),
        "score": ([PY, "-m", "auto3dseg.evaluation.score", "--submission", str(work / "submission" /
                                                                             "submission.zip"),
                   "--truth", str(synth / "test_truth.zarr"), "--test_manifest", str(synth / "test_crop_manifest.csv"),
                   "--out", str(d / "scores.json")], [work / "submission" / "submission.zip", synth / "test_truth.zarr"],
                  [d / "scores.json"]),
    }


def run_scale(n: float, base: Path, log, big: int = 0) -> dict:
    """Every step at ``--scale n`` (plus one ``big``³ test crop when given: then no scoring)."""
    d = base / (f"scale_{n:g}" + (f"_big{big}" if big else ""))
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    env = {"PYTHONPATH": str(ROOT)}
    extra = ["--big_test_crop", str(big)] if big else []
    gen = run_measured([PY, "-m", "converters.cellmap.synthetic", "--out", str(d / "synth"), "--scale", f"{n:g}", "--seed",
                        "0", "--no_progress", *extra], cwd=ROOT, env=env, log_path=d / "generate_data.log")
    if gen.returncode:
        raise RuntimeError(f"the generator failed at scale {n}: {gen.log[-2000:]}")
    summary = json.loads((d / "synth" / "scale.json").read_text())
    rows = {"generate_data": {**gen.as_dict(), "bytes": dir_bytes(d / "synth")}}
    for step, (cmd, inputs, outputs) in _commands(n, d, big).items():
        if big and step == "score":
            continue
        before = dir_bytes(*outputs)
        m = run_measured(cmd, cwd=ROOT, env=env, log_path=d / f"{step}.log")
        if m.returncode:
            raise RuntimeError(f"{step} failed at scale {n} (exit {m.returncode}); see {d / f'{step}.log'}:\n"
                               f"{m.log[-2000:]}")
        written = max(0, dir_bytes(*outputs) - before)
        floor = floor_io(inputs, written, d)
        rows[step] = {**m.as_dict(), "bytes": written, "floor_s": floor, "input_bytes": dir_bytes(*inputs)}
        rows[step].pop("log")
        log(f"  scale {n:g} {step:9s} {m.wall_s:8.1f} s  cpu {m.cpu_s:8.1f} s  tree {m.peak_tree_mib:7.0f} MiB  "
            f"process {m.peak_process_mib:7.0f} MiB  wrote {written / 2**20:8.1f} MiB  floor {floor:6.2f} s")
    datalist = json.loads((d / "nifti" / "datalist.json").read_text())
    report = json.loads((d / "nifti" / "conversion_report.json").read_text())
    scores = json.loads((d / "scores.json").read_text()) if not big else {}
    return {"scale": n, "summary": summary.get("totals", {}), "classes": len(datalist["class_table"]),
            "training_items": len(datalist.get("training", [])), "testing_items": len(datalist.get("testing", [])),
            "converted": report.get("summary", {}), "converted_voxels": _converted_voxels(report), "overall_score": (scores.get("overall") or {}).get("score"), "steps": rows}


def _converted_voxels(report: dict) -> dict[str, int]:
    """Voxels the converter wrote per usage (a 16 nm crop at the 8 nm target has 8× its own)."""
    out: dict[str, int] = {}
    for c in report.get("crops", []):
        grid = c.get("output_grid") or {}
        if grid.get("shape"):
            key = "test" if c.get("usage") == "test" else "training"
            out[key] = out.get(key, 0) + math.prod(int(s) for s in grid["shape"])
    return out


def _voxels(r: dict) -> float:
    t = r["summary"]
    return float(t.get("train_gt_voxels", 0)) + float(t.get("test_label_voxels", 0))


def growth(results: list[dict], step: str, key: str) -> list[float]:
    """Exponent k of ``key ∝ voxels^k`` between consecutive sizes."""
    out = []
    for a, b in zip(results, results[1:]):
        va, vb = _voxels(a), _voxels(b)
        ya, yb = a["steps"][step][key], b["steps"][step][key]
        out.append(math.log(max(yb, 1e-9) / max(ya, 1e-9)) / math.log(vb / va))
    return out


def _amdahl(wall: float, cpu: float, cores: int = 16, measured_cores: int = 2) -> float:
    """Wall time on ``cores`` from a run that kept ``cpu / wall`` of ``measured_cores`` busy."""
    busy = min(max(cpu / max(wall, 1e-9), 1.0), float(measured_cores))
    p = measured_cores / (measured_cores - 1) * (1 - 1 / busy) if measured_cores > 1 else 0.0
    return wall * ((1 - p) + p / cores) / ((1 - p) + p / measured_cores)


def markdown(results: list[dict]) -> str:
    lines = ["| scale | training items | test items | classes | training voxels | test voxels | official score |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        t = r["summary"]
        lines.append(f"| ×{r['scale'] / results[0]['scale']:g} (--scale {r['scale']:g}) | {r['training_items']} | "
                     f"{r['testing_items']} | {r['classes']} | {float(t.get('train_gt_voxels', 0)):.3g} | "
                     f"{float(t.get('test_label_voxels', 0)):.3g} | {r['overall_score'] if r['overall_score'] is None else round(r['overall_score'], 4)} |")
    lines += ["", "| step | " + " | ".join(f"×{r['scale'] / results[0]['scale']:g} s" for r in results)
              + " | cores busy (largest) | peak tree MiB | peak process MiB | written MiB (largest) | "
              "× floor (largest) | k time | k memory |",
              "|---|" + "---|" * (len(results) + 7)]
    for step in ("generate_data", *STEPS):
        last = results[-1]["steps"][step]
        kt = growth(results, step, "wall_s")
        km = growth(results, step, "peak_process_mib")
        floor = last.get("floor_s")
        ratio = f"{last['wall_s'] / floor:.1f}" if floor and floor > 0.05 else "n/a"
        lines.append(
            f"| {step} | " + " | ".join(f"{r['steps'][step]['wall_s']:.1f}" for r in results)
            + f" | {last['cpu_s'] / max(last['wall_s'], 1e-9):.2f} | "
            + " / ".join(f"{r['steps'][step]['peak_tree_mib']:.0f}" for r in results) + " | "
            + " / ".join(f"{r['steps'][step]['peak_process_mib']:.0f}" for r in results)
            + f" | {last.get('bytes', 0) / 2**20:.1f} | {ratio} | " + ", ".join(f"{k:.2f}" for k in kt) + " | "
            + ", ".join(f"{k:.2f}" for k in km) + " |")
    lines += ["", projection(results)]
    return "\n".join(lines) + "\n"


def linear_fit(results: list[dict], step: str, key: str = "wall_s") -> tuple[float, float]:
    """``cost = a + b * voxels`` through the two largest sizes (a, b >= 0): the fixed part (imports,
    model building) and the part that grows with the data."""
    (va, ya), (vb, yb) = [(_voxels(r), r["steps"][step][key]) for r in results[-2:]]
    b = max(0.0, (yb - ya) / (vb - va)) if vb > va else 0.0
    return max(0.0, yb - b * vb), b


def projection(results: list[dict]) -> str:
    last = results[-1]
    v_real = REAL["train_voxels"] + REAL["test_voxels"]
    lines = [f"Projection to {REAL['train_crops']} training crops ({REAL['train_voxels']:.2g} voxels) and "
             f"{REAL['test_crops']} test crops ({REAL['test_voxels']:.2g} label voxels): ×{v_real / _voxels(last):.0f} "
             "the largest size here; each step as fixed + per-voxel cost through the two largest sizes.", "",
             "| step | fixed s | s per G voxels | this machine (2 cores) h | 16-core node h | one GPU h |",
             "|---|---|---|---|---|---|"]
    for step in STEPS:
        s = last["steps"][step]
        a, b = linear_fit(results, step)
        here = a + b * v_real
        node = a + b * v_real * _amdahl(s["wall_s"], s["cpu_s"]) / max(s["wall_s"], 1e-9)
        gpu: float | str = node
        if step == "ensemble":  # the network moves to the GPU; reading, normalising and writing stay
            floor_per_voxel = s["floor_s"] / _voxels(last)
            gpu = a + REAL["test_voxels"] * (4 / 3) ** 3 / GPU_INFER_VOX_S + floor_per_voxel * v_real
        if step == "train":
            gpu = "see below"
        lines.append(f"| {step} | {a:.1f} | {b * 1e9:.0f} | {here / 3600:.2f} | {node / 3600:.2f} | "
                     + (f"{gpu / 3600:.2f}" if isinstance(gpu, float) else gpu) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scales", nargs="+", type=float, default=[16, 64, 256],
                    help="--scale values of the generator, smallest first (default: 16 64 256, i.e. x1 x4 x16)")
    ap.add_argument("--work", default="/tmp/bench_scale", help="scratch folder (needs a few GB at scale 256)")
    ap.add_argument("--json", default=None, help="also write every figure here")
    ap.add_argument("--keep", action="store_true", help="keep the scratch trees")
    ap.add_argument("--big", type=int, default=0, metavar="SIDE",
                    help="instead: one run at the smallest scale with an extra SIDE³ test crop (48 labels), "
                         "from conversion to the zipped submission (no scoring; the ensemble is the one best "
                         "bundle, each further bundle adds its network time); e.g. --big 1000")
    args = ap.parse_args(argv)
    base = Path(args.work)
    base.mkdir(parents=True, exist_ok=True)
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"{platform.system()} {platform.release()}", file=sys.stderr)
    if args.big:
        r = run_scale(min(args.scales), base, lambda s: print(s, file=sys.stderr, flush=True), big=args.big)
        if args.json:
            Path(args.json).write_text(json.dumps(r, indent=1))
        print("| step | s | cores busy | peak tree MiB | peak process MiB | written MiB |\n|---|---|---|---|---|---|")
        for step, s in r["steps"].items():
            print(f"| {step} | {s['wall_s']:.1f} | {s['cpu_s'] / max(s['wall_s'], 1e-9):.2f} | "
                  f"{s['peak_tree_mib']:.0f} | {s['peak_process_mib']:.0f} | {s.get('bytes', 0) / 2**20:.0f} |")
        return 0
    results = []
    for n in sorted(args.scales):
        results.append(run_scale(n, base, lambda s: print(s, file=sys.stderr, flush=True)))
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=1))
        if not args.keep:
            shutil.rmtree(base / f"scale_{n:g}", ignore_errors=True)
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
