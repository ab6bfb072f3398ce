"""Submission: labels placed on each test crop's grid, the CellMap Zarr submission (zipped), and
the CellSeg ``<name>_label.tiff`` folder."""
