"""MONAI BundleAlgo of the segresnet template: all logic is shared in auto3dseg.bundles.bundle_algo."""

from auto3dseg.bundles.bundle_algo import CellmapBundleAlgo


class SegresnetAlgo(CellmapBundleAlgo):
    network = "segresnet"
