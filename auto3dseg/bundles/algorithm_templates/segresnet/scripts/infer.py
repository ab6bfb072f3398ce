"""MONAI's ensemble imports InferClass from here: see auto3dseg.engine.inference."""

from auto3dseg.engine.inference import InferClass

__all__ = ["InferClass"]
