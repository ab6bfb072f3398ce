"""MONAI's ensemble imports InferClass from here: see auto3dseg.inference."""

from auto3dseg.inference import InferClass

__all__ = ["InferClass"]
