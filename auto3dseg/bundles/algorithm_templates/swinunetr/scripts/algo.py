"""MONAI BundleAlgo of the swinunetr template: all logic is shared in auto3dseg.bundles.bundle_algo."""

from auto3dseg.bundles.bundle_algo import CellmapBundleAlgo


class SwinunetrAlgo(CellmapBundleAlgo):
    network = "swinunetr"
