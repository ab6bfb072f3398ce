"""The command line of ``python -m converters.cellmap.convert``: every flag, with its help."""

from __future__ import annotations

import argparse

from converters.cellmap.input_checks import (folds_arg, max_voxels_arg, positive_int, spacing_arg, upsample_arg,
                                             workers_arg)
from converters.folds import DEFAULT_FOLD_GAP

__all__ = ["build_parser"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m converters.cellmap.convert",
        description="Convert CellMap Zarr crops (EM + ground truth) to NIfTI images/labels and a MONAI "
                    "datalist.json with folds, a class table and which classes each crop annotates. Label values nobody "
                    "annotated (255 unknown, values that are no CellMap class) are written as 255 (not annotated) and "
                    "counted in the report; a crop whose EM has NaN/inf values, a damaged chunk, or whose target "
                    "spacing needs an unreadable EM level fails (named; the others convert). datalist.json is "
                    "written last: without it the conversion is not complete.",
        epilog="Exit status: 0 when every crop was converted, resumed, or skipped for a reason that is not a defect "
               "(nothing annotated, outside the EM, EM too coarse for --max_em_upsample); 1 when some or every crop failed "
               "(unreadable, damaged, invalid: each named in the summary and the report, the datalist written for "
               "the others), or when a worker process was killed (most likely out of memory: no datalist; run again "
               "with fewer --workers, finished crops are resumed); 2 for usage errors (flags, a bad datasplit or "
               "manifest line, an unknown class) and when outputs cannot be written (full disk, read-only folder).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    src = p.add_argument_group("input (--datasplit, or --data_root)")
    src.add_argument("--datasplit", help="the toolbox's header-less datasplit.csv listing training crops")
    src.add_argument("--data_root", help="folder holding <dataset>/<dataset>.zarr stores; without --datasplit "
                     "every */*.zarr/recon-1/labels/groundtruth/crop* is converted; with it, only the datasplit's "
                     "crops are, and this folder only locates the EM stores of --test_manifest's datasets")
    src.add_argument("--test_manifest", help="test_crop_manifest.csv: convert those crops' EM (no labels) as "
                     "'testing' entries")
    p.add_argument("--output_dir", required=True, help="where images/, labels/, datalist.json and the report go")
    p.add_argument("--target_spacing", nargs=3, type=spacing_arg, default=[8.0, 8.0, 8.0], metavar=("Z", "Y", "X"),
                   help="output voxel size in nm, z y x")
    p.add_argument("--scale", default="auto", help="EM pyramid level to read: 'auto' picks the coarsest level "
                   "no coarser than the target that has data in the crop's region; 'sN' forces one (a level no "
                   "EM group has is a usage error naming the levels there)")
    p.add_argument("--classes", nargs="+", help="class names to keep (CellMap names, e.g. mito er nuc); "
                   "default: every most-specific class annotated in some crop, plus annotated groups of them")
    p.add_argument("--num_folds", type=folds_arg, default=5, help="cross-validation folds (1 or more); crops of "
                   "one dataset stay together when there are at least this many datasets, else crops do; with fewer "
                   "crops than folds, crops are cut into slabs along their longest axis, one fold each (spatial folds)")
    p.add_argument("--fold_gap", type=int, default=DEFAULT_FOLD_GAP, help="output voxels left out between two "
                   "spatial folds of one crop (a slab boundary), so that objects cut there are not on both sides")
    p.add_argument("--workers", type=workers_arg, default=1, help="crops converted in parallel (processes; 0 "
                   "or 1: in this process); each holds about one crop in memory, so fewer when the out-of-memory "
                   "killer ends one")
    p.add_argument("--max_crops", type=positive_int, help="convert only the first N crops (a quick try; N >= 1)")
    p.add_argument("--max_voxels", type=max_voxels_arg, help="write crops (or their spatial folds) with more output "
                   "voxels than this as several tiles (at least 4096, a 16^3 tile)")
    p.add_argument("--max_em_upsample", type=upsample_arg, default=2.0, help="largest factor EM may be upsampled "
                   "by when only coarser EM has data in a crop's region; beyond it the crop is skipped (1 or more; 1: "
                   "never upsample)")
    p.add_argument("--force", action="store_true", help="reconvert finished crops, and accept an output_dir "
                   "converted with other settings (overwrites its files)")
    p.add_argument("--dry_run", action="store_true", help="inspect crops and print the plan (JSON on stdout: "
                   "classes, tiles with their boxes and folds; a summary on stderr); write nothing; exit 1, as the run "
                   "would, when some crop would fail or none would convert")
    p.add_argument("--no_progress", action="store_true", help="no progress bar")
    return p
