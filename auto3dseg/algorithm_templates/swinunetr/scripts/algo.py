"""MONAI BundleAlgo of the swinunetr template: all logic is shared in auto3dseg.bundle_algo."""

from auto3dseg.bundle_algo import CellmapBundleAlgo


class SwinunetrAlgo(CellmapBundleAlgo):
    network = "swinunetr"
