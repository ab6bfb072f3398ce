"""The pooled intensity histogram and the review's figures (matplotlib, written atomically).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from converters.outputs import atomic_write


# --------------------------------------------------------------------------- intensity histogram
def pooled_intensity_histogram(
    paths: Sequence[str | os.PathLike[str]],
    *,
    bins: int = 256,
    value_range: tuple[float, float] | None = None,
    chunk_voxels: int = 1 << 24,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Histogram of all voxels of the given images (read with nibabel), pooled.

    Parameters
    ----------
    paths : sequence of path
        NIfTI images.
    bins : int
        Number of equal-width bins.
    value_range : (float, float), optional
        Histogram range; default the images' min and max (one extra pass).
    chunk_voxels : int
        Voxels histogrammed at a time (bounds the float copy).

    Returns
    -------
    (counts, edges, unreadable)
        ``counts`` has ``bins`` entries, ``edges`` ``bins + 1``; ``unreadable`` lists the
        paths that could not be read.
    """
    import nibabel as nib

    def arrays() -> Iterable[tuple[str, np.ndarray | None]]:
        for p in paths:
            try:
                yield os.fspath(p), np.asanyarray(nib.load(os.fspath(p)).dataobj).reshape(-1)
            except Exception:  # noqa: BLE001 - report, do not abort the review
                yield os.fspath(p), None

    unreadable: list[str] = []
    if value_range is None:
        lo, hi = math.inf, -math.inf
        for p, a in arrays():
            if a is None or a.size == 0:
                continue
            lo, hi = min(lo, float(a.min())), max(hi, float(a.max()))
        if not math.isfinite(lo):
            lo, hi = 0.0, 1.0
        value_range = (lo, hi)
    lo, hi = float(value_range[0]), float(value_range[1])
    if not hi > lo:
        hi = lo + 1.0
    edges = np.linspace(lo, hi, bins + 1)
    counts = np.zeros(bins, dtype=np.int64)
    for p, a in arrays():
        if a is None:
            unreadable.append(p)
            continue
        for s in range(0, a.size, chunk_voxels):
            c, _ = np.histogram(a[s:s + chunk_voxels], bins=edges)
            counts += c
    return counts, edges, unreadable


def histogram_percentiles(counts: np.ndarray, edges: np.ndarray, qs: Sequence[float]) -> list[float | None]:
    """Percentiles of the data behind a histogram (linear within the crossing bin).

    Accurate to one bin width. None for each q when the histogram is empty.

    >>> histogram_percentiles(np.array([1, 1, 2]), np.array([0., 1., 2., 3.]), [50])
    [2.0]
    """
    counts = np.asarray(counts, dtype=float)
    total = counts.sum()
    if total <= 0:
        return [None for _ in qs]
    cum = np.cumsum(counts)
    out: list[float | None] = []
    for q in qs:
        target = min(max(q, 0.0), 100.0) / 100.0 * total
        k = int(np.searchsorted(cum, target, side="left"))
        k = min(k, len(counts) - 1)
        while counts[k] == 0 and k < len(counts) - 1:
            k += 1
        before = cum[k - 1] if k > 0 else 0.0
        frac = (target - before) / counts[k] if counts[k] > 0 else 0.0
        out.append(float(edges[k] + min(max(frac, 0.0), 1.0) * (edges[k + 1] - edges[k])))
    return out


# --------------------------------------------------------------------------- figures
def _save_figure(fig: Any, path: Path) -> None:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    atomic_write(path, lambda tmp: tmp.write_bytes(buf.getvalue()))


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)  # Agg, whatever pyplot's backend is
    return fig


def _plot_intensity(path: Path, counts: np.ndarray, edges: np.ndarray, p_lo: float | None, p_hi: float | None,
                    n_images: int, n_total: int) -> None:
    fig = _figure(7.5, 4.0)
    ax = fig.add_subplot(1, 1, 1)
    if counts.sum() > 0:
        ax.stairs(np.maximum(counts, 0), edges, fill=True, alpha=0.7, color="tab:blue")
        ax.set_yscale("log")
    for v, lab, col in ((p_lo, "0.5th percentile", "tab:red"), (p_hi, "99.5th percentile", "tab:orange")):
        if v is not None:
            ax.axvline(v, color=col, linestyle="--", label=f"{lab}: {v:.4g}")
    ax.set_xlabel("intensity")
    ax.set_ylabel("voxels (log)")
    ax.set_title(f"Intensity histogram, {len(counts)} bins, pooled over {n_images} of {n_total} images")
    if n_images == 0:
        ax.text(0.5, 0.5, "no image could be read: see [unreadable-image] in the review's flags",
                ha="center", va="center", transform=ax.transAxes)
    if p_lo is not None or p_hi is not None:
        ax.legend(loc="upper right", fontsize=8)
    _save_figure(fig, path)


def _plot_shapes(path: Path, sizes: np.ndarray, spacings: np.ndarray) -> None:
    fig = _figure(10.0, 4.0)
    ax1 = fig.add_subplot(1, 2, 1)
    ax2 = fig.add_subplot(1, 2, 2)
    rng = np.random.default_rng(0)
    axes_names = ["x (i)", "y (j)", "z (k)"]
    for ax, data, title, ylabel in (
        (ax1, sizes, "Physical size per axis", "size (affine units; nm for CellMap)"),
        (ax2, spacings, "Spacing per axis", "spacing (affine units; nm for CellMap)"),
    ):
        if data.size:
            nd = data.shape[1]
            ax.boxplot([data[:, a] for a in range(nd)], showfliers=False)
            for a in range(nd):
                ax.scatter(a + 1 + rng.uniform(-0.15, 0.15, len(data)), data[:, a], s=10, alpha=0.6,
                           color="tab:blue")
            ax.set_xticks(range(1, nd + 1), (axes_names + [f"axis {a}" for a in range(3, nd)])[:nd])
        ax.set_title(title)
        ax.set_ylabel(ylabel)
    _save_figure(fig, path)


def _class_labels(ids: Sequence[int], names: Mapping[int, str]) -> list[str]:
    return [f"{i} {names.get(i, i)}" for i in ids]


def _plot_fraction(path: Path, ids: Sequence[int], names: Mapping[int, str],
                   stats: Mapping[int, Mapping[str, Any]]) -> None:
    fig = _figure(7.5, max(2.5, 0.32 * len(ids) + 1.2))
    ax = fig.add_subplot(1, 1, 1)
    vals = [100.0 * (stats[i]["mean_fraction_annotated"] or 0.0) for i in ids]
    y = np.arange(len(ids))
    ax.barh(y, vals, color="tab:green")
    for yy, v, i in zip(y, vals, ids):
        txt = "not annotated" if stats[i]["annotated"] == 0 else f"{v:.3g} %"
        ax.text(v, yy, " " + txt, va="center", fontsize=7)
    ax.set_yticks(y, _class_labels(ids, names))
    ax.invert_yaxis()
    ax.set_xlabel("mean voxel fraction over crops that annotate the class (%)")
    ax.set_title("Class voxel fraction, by label value")
    if vals and max(vals) > 0:
        ax.set_xlim(0, max(vals) * 1.25)
    _save_figure(fig, path)


def _plot_coverage(path: Path, ids: Sequence[int], names: Mapping[int, str],
                   stats: Mapping[int, Mapping[str, Any]], n_cases: int) -> None:
    fig = _figure(7.5, max(2.5, 0.38 * len(ids) + 1.2))
    ax = fig.add_subplot(1, 1, 1)
    y = np.arange(len(ids))
    h = 0.4
    ann = [stats[i]["annotated"] for i in ids]
    pres = [stats[i]["present"] for i in ids]
    ax.barh(y - h / 2, ann, height=h, label="annotated (annotated_mask)", color="tab:blue")
    ax.barh(y + h / 2, pres, height=h, label="present (fraction > 0)", color="tab:orange")
    ax.set_yticks(y, _class_labels(ids, names))
    ax.invert_yaxis()
    ax.set_xlabel(f"crops (of {n_cases})")
    ax.set_title("Class coverage: annotated vs present")
    ax.legend(loc="lower right", fontsize=8)
    _save_figure(fig, path)


