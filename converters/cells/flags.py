"""The command line of ``python -m converters.cells.convert``: every flag with its help, and the
checks of flag values that would run away or mean nothing."""

from __future__ import annotations

import argparse
import math

__all__ = ["MIN_TILE_PIXELS", "build_parser", "flag_problems"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m converters.cells.convert",
        description="Convert 2-D cell images in the NeurIPS 2022 CellSeg layout (images/ and labels/<stem>_label.tiff) "
                    "to NIfTI images and training targets with a MONAI datalist.json (folds, class table). Images "
                    "without a label become 'testing' entries (a blank one too, so that it gets its "
                    "<stem>_label.tiff). A bad image fails, named with its reason, and the others convert: "
                    "unreadable image or label, NaN/inf pixels, label of another size, multi-channel or binary (not "
                    "instance ids) label, a label whose background is not 0 (e.g. 65535), an 8-bit label whose "
                    "ids wrapped around (cells sharing ids), a "
                    "constant training image, a label named like <stem>_labels.tiff or <stem>_mask.png (misnamed), "
                    "two images with one stem. Labels that match no image, and files in subfolders of --images or "
                    "--labels (which are not read), are warned about. Exit status: 0 when "
                    "every image was converted, resumed or skipped for a reason that is no defect (empty_label: no "
                    "cell annotated); 1 when any image failed (datalist.json still written for the others) or a worker process was "
                    "killed (no datalist.json: run again with fewer --workers, finished images resume); 2 for "
                    "usage errors and a full disk or read-only --output_dir. datalist.json is written last: without "
                    "it the conversion is not complete.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--images", required=True, help="folder of images (.tif .tiff .png .jpg .jpeg .bmp)")
    p.add_argument("--labels", help="folder of instance masks <stem>_label.tiff; images without one are testing images "
                   "(one with a near-miss label such as <stem>_labels.tiff or <stem>_mask.png fails)")
    p.add_argument("--output_dir", required=True, help="where images/, labels/, instances/, datalist.json and the "
                   "report go")
    p.add_argument("--num_folds", type=int, default=5, help="cross-validation folds, 1 or more (each image, "
                   "with its tiles, in one fold)")
    p.add_argument("--workers", type=int, default=1, help="images converted in parallel (processes; 0 or 1: "
                   "in this process)")
    p.add_argument("--max_pixels", type=int, help="cut training images with more pixels into overlapping tiles "
                   "(e.g. 4194304 for 2048x2048); testing images are never cut")
    p.add_argument("--tile_overlap", type=int, default=64, help="overlap of neighbouring tiles, pixels")
    p.add_argument("--force", action="store_true", help="reconvert finished images, and accept an output_dir "
                   "converted with other settings (overwrites its files)")
    p.add_argument("--dry_run", action="store_true", help="pair images and labels, show tiles and folds; write nothing")
    p.add_argument("--no_progress", action="store_true", help="no progress bar")
    return p


#: the fewest pixels a training tile may hold (128 x 128): smaller ones are too small to train on,
#: and a limit such as 100 cut one image into hundreds of thousands of files
MIN_TILE_PIXELS = 128 * 128


def flag_problems(args: argparse.Namespace) -> list[str]:
    """Values of the tiling and process flags that would run away or mean nothing, each with the fix.

    >>> flag_problems(build_parser().parse_args(["--images", "i", "--output_dir", "o", "--max_pixels", "100"]))[0][:40]
    '--max_pixels 100: tiles of at most 100 p'
    """
    problems = []
    if args.num_folds < 1:  # here, not in convert_cells: that refused it after converting every image
        problems.append(f"--num_folds {args.num_folds}: give 1 or more cross-validation folds (e.g. 5)")
    if args.workers < 0:
        problems.append(f"--workers {args.workers}: give 1 or more processes (0 converts in this process)")
    if args.max_pixels is not None and args.max_pixels < MIN_TILE_PIXELS:
        problems.append(f"--max_pixels {args.max_pixels}: tiles of at most {args.max_pixels} pixels are too small to "
                        f"train on (and would be many files); give at least {MIN_TILE_PIXELS} (128 x 128), e.g. "
                        "4194304 for 2048 x 2048, or leave it out to keep images whole")
    if args.tile_overlap < 0:
        problems.append(f"--tile_overlap {args.tile_overlap}: give 0 or more pixels")
    elif args.max_pixels is not None and args.max_pixels >= MIN_TILE_PIXELS:
        side = math.isqrt(int(args.max_pixels))
        if side - args.tile_overlap < side // 4:  # each tile a few pixels on from the last: a runaway
            problems.append(f"--tile_overlap {args.tile_overlap}: tiles of --max_pixels {args.max_pixels} are about "
                            f"{side} pixels on a side; neighbours would overlap by more than three quarters of it "
                            f"(one image became tens of thousands of tiles): give an overlap of at most "
                            f"{side - side // 4}")
    return problems
