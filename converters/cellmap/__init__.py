"""CellMap Zarr crops to NIfTI: reading the tree (`zarr_tree`), class mapping, one crop's conversion
(`crop`, `em_level`, `labels`), the report and the CLI (`python -m converters.cellmap.convert`);
`synthetic` writes the built-in CellMap-like data."""
