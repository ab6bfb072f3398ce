#!/usr/bin/env python
"""Auto3DSeg for CellMap EM and 2D cell data: one work folder, one mode at a time.

Modes available now:

* ``validate``: check a datalist (folds, class table, files, shapes) and print a summary;
* ``analyze``: validate, then MONAI's DataAnalyzer → ``<work_dir>/datastats.yaml``, and a
  review a person reads: ``datastats_review.md`` with plots in ``review/``.

Bundle generation, training, ensembling and prediction are not built yet (see README).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

MODES = ("validate", "analyze")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="run_auto3dseg.py",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--mode", choices=MODES, required=True,
                   help="validate: check the datalist only; analyze: validate, then write datastats.yaml "
                   "and datastats_review.md (+ plots)")
    p.add_argument("--datalist", required=True, help="datalist JSON (from converters.convert_zarr_to_nifti)")
    p.add_argument("--dataroot", help="folder the datalist's paths are relative to (default: the datalist's folder)")
    p.add_argument("--work_dir", default="work_dir", help="where every mode reads and writes its outputs")
    p.add_argument("--device", default="cpu", help="device for analysis: cpu or cuda")
    p.add_argument("--workers", type=int, default=2, help="data-loading worker processes")
    p.add_argument("--force", action="store_true", help="redo a step whose output already exists")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from datalists.validate import DatalistError, format_summary, validate_datalist

    dataroot = args.dataroot or str(Path(args.datalist).parent)
    try:
        summary = validate_datalist(args.datalist, dataroot)
    except DatalistError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_summary(summary))
    for w in summary.get("warnings", []):
        print(f"warning: {w}", file=sys.stderr)
    if args.mode == "validate":
        return 0
    from auto3dseg.analyze import analyze

    stats = analyze(args.datalist, args.work_dir, dataroot, device=args.device, workers=args.workers,
                    force=args.force, validate=False)  # validated just above
    print(f"Data statistics: {stats}")
    print(f"Review:          {stats.parent / 'datastats_review.md'} (plots in {stats.parent / 'review'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
