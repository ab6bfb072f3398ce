"""Cost of an anisotropy-aware segresnet step against the isotropic baseline, in the same process.

What ``bench/quality_sbem.py`` trains on the SBEM sample (40 × 6 × 6 nm voxels, 10 training
slices), one training step each (forward, deep-supervision loss, backward, AdamW step):

* **anisotropic** (what bundles of such data get now): SegResNetDS with
  ``resolution=(6, 6, 40)`` (no downsampling of z until the in-plane voxel catches up) on a
  96 × 96 × 10 patch (z = the images' extent);
* **isotropic** (the baseline, ``quality_sbem.py --isotropic``): ``resolution=None`` on a
  96 × 96 × 16 patch (z rounded up to segresnet's multiple of 16 and padded).

The two alternate step by step (A B, B A, ...) on the same threads, so both see the same
machine load. Reported: seconds per step (median and min), parameters, and the voxels of the
feature maps at each level (what the deeper levels cost).

Usage::

    .venv/bin/python bench/bench_anisotropic_net.py            # 12 steps each, init_filters 16
    .venv/bin/python bench/bench_anisotropic_net.py --steps 4
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _level_voxels(net, patch: tuple[int, int, int]) -> list[str]:
    """Spatial size of each encoder level's output, from forward hooks."""
    import torch

    sizes: list[str] = []
    hooks = [layer.register_forward_hook(lambda m, i, o: sizes.append("x".join(str(s) for s in o.shape[2:])))
             for layer in (level["blocks"] for level in net.encoder.layers)]
    with torch.no_grad():
        net(torch.zeros(1, 1, *patch))
    for h in hooks:
        h.remove()
    return sizes


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=12, help="timed steps per variant (default 12)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per variant first (default 2)")
    p.add_argument("--init_filters", type=int, default=16, help="segresnet width (default 16, as quality_sbem)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    args = p.parse_args(argv)

    import torch

    from auto3dseg.engine.networks import build_network

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    variants = {
        "anisotropic": ((96, 96, 10), (6.0, 6.0, 40.0)),
        "isotropic": ((96, 96, 16), None),
    }
    runs: dict[str, dict] = {}
    for name, (patch, resolution) in variants.items():
        net = build_network("segresnet", 1, 2, {"init_filters": args.init_filters, "resolution": resolution})
        x = torch.randn(2, 1, *patch)
        y = (torch.rand(2, 2, *patch) > 0.5).float()
        runs[name] = {"net": net, "opt": torch.optim.AdamW(net.parameters(), 2e-4), "x": x, "y": y, "times": [],
                      "params": sum(t.numel() for t in net.parameters()), "levels": _level_voxels(net, patch),
                      "patch": patch}

    def step(r: dict) -> float:
        t0 = time.perf_counter()
        outs = r["net"](r["x"])
        outs = outs if isinstance(outs, (list, tuple)) else [outs]
        loss = sum(torch.nn.functional.binary_cross_entropy_with_logits(
            torch.nn.functional.interpolate(o, size=r["x"].shape[2:]) if o.shape[2:] != r["x"].shape[2:] else o,
            r["y"]) for o in outs)
        r["opt"].zero_grad()
        loss.backward()
        r["opt"].step()
        return time.perf_counter() - t0

    names = list(runs)
    for _ in range(args.warmup):
        for n in names:
            step(runs[n])
    for i in range(args.steps):
        for n in (names if i % 2 == 0 else names[::-1]):
            runs[n]["times"].append(step(runs[n]))

    print(f"segresnet step (batch 2, init_filters {args.init_filters}, {args.threads} threads, {args.steps} steps "
          f"each, alternating), {platform.processor() or platform.machine()}, torch {torch.__version__}\n")
    print("| variant | patch (x, y, z) | s/step median | min | parameters | encoder levels (x×y×z) |")
    print("|---|---|---|---|---|---|")
    for n, r in runs.items():
        print(f"| {n} | {'×'.join(map(str, r['patch']))} | {statistics.median(r['times']):.2f} | {min(r['times']):.2f} "
              f"| {r['params'] / 1e6:.2f} M | {', '.join(r['levels'])} |")
    ratio = statistics.median(runs["anisotropic"]["times"]) / statistics.median(runs["isotropic"]["times"])
    print(f"\nanisotropic / isotropic, median s/step: {ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
