"""The swinunetr algorithm template of cellmap-auto3dseg."""
