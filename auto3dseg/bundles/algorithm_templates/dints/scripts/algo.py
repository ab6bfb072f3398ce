"""MONAI BundleAlgo of the dints template: all logic is shared in auto3dseg.bundles.bundle_algo."""

from auto3dseg.bundles.bundle_algo import CellmapBundleAlgo


class DintsAlgo(CellmapBundleAlgo):
    network = "dints"
