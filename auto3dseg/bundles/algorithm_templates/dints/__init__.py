"""The dints algorithm template of cellmap-auto3dseg."""
