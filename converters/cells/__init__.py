"""2-D cell images (NeurIPS 2022 CellSeg layout) to NIfTI: reading images (`images`), instance targets,
one item's conversion (`item`), the datalist and the CLI (`python -m converters.cells.convert`);
`synthetic` writes the built-in cell images."""
