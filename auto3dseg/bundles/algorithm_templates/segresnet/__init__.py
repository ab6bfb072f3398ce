"""The segresnet algorithm template of cellmap-auto3dseg."""
