"""Bundles: the project's algorithm templates (SegResNet, DiNTS, SwinUNETR), the configuration each
bundle derives from ``datastats.yaml`` and the datalist, MONAI's BundleGen driving generation,
and the checks a bundle must pass before it trains (override keys, class table)."""
