"""Inference of one trained bundle: what each template's ``scripts/infer.py`` exposes.

:class:`InferClass` loads the network once and returns, for an image file, channel-first
probabilities ``[C, *spatial]`` on that image's own grid: sigmoid per class (channel
``i`` = ``class_names[i]``) or, for softmax bundles, ``background`` then the classes.
Images of any size go through sliding windows block by block
(:mod:`auto3dseg.engine.blockwise`): the memory is that of one block (``sw_memory_gb``), on the
GPU as on the CPU, and the image stays in its stored dtype until a block is normalised.
"""

from __future__ import annotations

import sys

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from auto3dseg.bundles.config import load_bundle_config
from auto3dseg.engine.training import make_model

__all__ = ["InferClass", "load_trained_model", "mirror_pad", "predict_array", "raw_image_loader"]


def raw_image_loader(spatial_dims: int = 3):
    """Load an image channel-first in its stored dtype, refusing NaN/inf voxels (named); 2-D
    images lose their singleton depth. Normalisation is left to the blocks."""
    from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged

    from auto3dseg.engine.input_checks import CheckFinited
    from auto3dseg.engine.transforms import DropSingletonDepthd

    steps = [LoadImaged(keys="image", dtype=None, image_only=True), EnsureChannelFirstd(keys="image"),
             CheckFinited(keys=["image"])]
    if spatial_dims == 2:
        steps.append(DropSingletonDepthd(keys=["image"]))
    return Compose(steps)


def load_trained_model(cfg: dict, device: torch.device, checkpoint: str | Path | None = None
                       ) -> tuple[torch.nn.Module, dict]:
    """The bundle's network with its best weights (``model.pt``; ``last.pt`` if no best
    yet) and the config to run it with: the bundle's, with the network, classes, patch
    size and normalisation the checkpoint was trained with (train-time overrides included).
    """
    ckpt_dir = Path(cfg["ckpt_path"])
    path = Path(checkpoint) if checkpoint else ckpt_dir / "model.pt"
    if not path.is_file() and not checkpoint and (ckpt_dir / "last.pt").is_file():
        path = ckpt_dir / "last.pt"
    if not path.is_file():
        raise FileNotFoundError(f"no trained weights in {ckpt_dir} (model.pt / last.pt); train the bundle first "
                                f"(run_auto3dseg.py --mode train)")
    from auto3dseg.engine.checkpoints import load_checkpoint

    bundle = Path(cfg.get("bundle_root") or ckpt_dir.parent)
    ckpt = load_checkpoint(path, f"Retrain the bundle {bundle}: run_auto3dseg.py --mode train --algo {cfg.get('algo')} "
                                 f"--fold {cfg.get('fold')} --force (the damaged model/ is moved to replaced/)")
    run_cfg = {**cfg, **(ckpt.get("config") or {}), **(ckpt.get("inference_config") or {})}
    model = make_model({**run_cfg, "pretrained_ckpt": None})
    model.load_state_dict(ckpt.get("state_dict") or ckpt["model"])
    return model.to(device).eval(), run_cfg


def mirror_pad(image: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Pad ``[C, *S]`` to at least ``size`` per spatial axis, centred, by mirroring the image
    (edge voxels repeated: numpy's ``symmetric``), so any pad width works, even wider than
    the image. Axes already large enough are left alone (no copy when none needs padding).

    >>> mirror_pad(torch.tensor([[1.0, 2.0, 3.0]]), [7])
    tensor([[2., 1., 1., 2., 3., 3., 2.]])
    """
    spatial = image.shape[1:]
    widths = [(0, 0)] + [((max(p, s) - s) // 2, max(p, s) - s - (max(p, s) - s) // 2) for p, s in zip(size, spatial)]
    if not any(a or b for a, b in widths):
        return image
    arr = np.pad(image.detach().cpu().numpy(), widths, mode="symmetric")
    return torch.from_numpy(arr).to(image.device)


@torch.no_grad()
def predict_array(model: torch.nn.Module, image: torch.Tensor | np.ndarray, cfg: dict, device: torch.device,
                  budget_bytes: float | None = None, params: dict | None = None) -> torch.Tensor:
    """Probabilities ``[C, *S]`` (CPU) of an image ``[in_ch, *S]`` of any size, assembled from
    :func:`auto3dseg.engine.blockwise.predict_blocks` (one block when it fits the ``sw_memory_gb``
    budget: MONAI's sliding window over the whole image). The image is taken as normalised,
    or as raw and normalised block by block with ``params``."""
    from auto3dseg.engine.blockwise import predict_blocks

    out: torch.Tensor | None = None
    for block, prob in predict_blocks(model, image, cfg, device, params, budget_bytes=budget_bytes):
        if out is None:
            out = torch.empty((prob.shape[0], *image.shape[1:]), dtype=torch.float32)
        out[(slice(None), *block.core)] = prob
    assert out is not None
    return out


def _unreadable(path: Any, exc: BaseException) -> Exception | None:
    """A file the image loader could not read, as an error naming it; None for any other error."""
    from auto3dseg.engine.input_checks import InputError

    if not (isinstance(exc, OSError) or "LoadImage" in str(exc)):
        return None
    root = exc
    for _ in range(20):  # the innermost cause says what is wrong with the file
        nxt = root.__cause__ or root.__context__
        if nxt is None:
            break
        root = nxt
    reason = (str(root).strip().splitlines() or [type(root).__name__])[0]
    if not str(path).lower().endswith((".nii", ".nii.gz")):  # a raw image: the bundles read converted ones
        return InputError(f"{path}: cannot read the image ({reason}); the bundles read images converted like their "
                          "training data (NIfTI): convert it first (python -m converters.cells.convert for cell "
                          "images, python -m converters.cellmap.convert for CellMap crops)")
    return InputError(f"{path}: cannot read the image ({reason}); check that it is a complete NIfTI file "
                      "(re-convert or re-copy it)")


class InferClass:
    """Load a trained bundle once; :meth:`infer` returns probabilities for an image file.

    Parameters
    ----------
    config_file : str or list of str
        The bundle's YAML files (MONAI's ``get_inferer`` passes every file in ``configs/``).
    **override
        Config values to change (e.g. ``sw_batch_size=4``, ``device="cpu"``, ``sw_memory_gb=8``,
        ``checkpoint=<path>``, ``tta=True``: test-time mirroring). Keys MONAI's ensemble passes
        for other templates are ignored.

    :meth:`infer` keeps MONAI's contract (the whole map at once). For images of any size,
    :meth:`load` the raw image once and take its probabilities block by block with
    :meth:`predict_blocks` (what the ensemble does, in bounded memory).
    """

    def __init__(self, config_file: str | Sequence[str] | None = None, **override: Any):
        files = [f for f in ([config_file] if isinstance(config_file, str) else list(config_file or []))
                 if str(f).endswith((".yaml", ".yml"))]
        known = {k: v for k, v in override.items() if k in {"sw_batch_size", "sw_overlap", "amp", "device",
                                                             "checkpoint", "patch_size", "sw_memory_gb", "tta"}}
        checkpoint = known.pop("checkpoint", None)
        cfg = load_bundle_config(files)
        want = str(known.get("device", cfg.get("device", "auto")))
        self.device = torch.device("cuda" if (want in ("auto", "cuda") and torch.cuda.is_available()) else
                                   (want if want not in ("auto", "cuda") else "cpu"))
        self.model, run_cfg = load_trained_model(cfg, self.device, checkpoint)
        self.cfg = {**run_cfg, **known}
        gb = self.cfg.get("sw_memory_gb")
        if gb not in (None, "auto") and (isinstance(gb, bool) or not isinstance(gb, (int, float)) or not 0 < gb < 1e6):
            where = "the override" if "sw_memory_gb" in known else f"{Path(files[0]).parent if files else 'its config'}"
            raise ValueError(f"{where}: sw_memory_gb {gb!r}: expected the GB one sliding-window block may use, a "
                             "number > 0 (4 is the default), or auto; fix that key")
        #: image path -> the warning its voxel size gave (recorded with its map, said again when kept)
        self.spacing_warnings: dict[str, str] = {}
        self.loader = raw_image_loader(int(self.cfg.get("spatial_dims", 3)))
        self.channel_names = (["background"] if self.cfg.get("output_activation") == "softmax" else []) + list(
            self.cfg["class_names"])

    def _check_spacing(self, path: str, image: Any) -> None:
        """Warn when an image's voxel size differs from the training data's (no resampling here)."""
        want = self.cfg.get("spacing")
        affine = getattr(image, "affine", None)
        if not want or affine is None or self.cfg.get("check_spacing") is False:
            return
        got = np.sqrt((np.asarray(affine)[:-1, :-1] ** 2).sum(0))
        if len(got) == len(want) and not np.allclose(got, want, rtol=0.05):
            from tqdm import tqdm

            # tqdm.write: on a line of its own, not glued to a progress bar that is being drawn
            text = (f"{path} has voxel size {np.round(got, 3).tolist()}, the model was trained at {want}; convert "
                    "it at the training spacing (converters --target_spacing) for meaningful predictions")
            self.spacing_warnings[str(path)] = text
            # in a log file (not a terminal) the bar's text stays before it: a newline first (see bar_safe)
            tqdm.write(("" if sys.stderr.isatty() else "\n") + f"warning: {text}", file=sys.stderr)

    def load(self, image_file: str | dict) -> tuple[np.ndarray, dict]:
        """The image ``[in_ch, *S]`` in its stored dtype (uint8 EM stays 1 byte per voxel) and its
        metadata (``affine``...); missing, unreadable, non-finite and wrong-dimensional images
        are named with the fix."""
        from auto3dseg.engine.input_checks import InputError, user_error

        path = image_file["image"] if isinstance(image_file, dict) else image_file
        if isinstance(path, (str, Path)) and not Path(path).is_file():
            raise FileNotFoundError(f"image not found: {path}")
        try:
            image = self.loader({"image": path})["image"]
        except Exception as exc:  # noqa: BLE001 - MONAI wraps the user's error in "applying transform <...>"
            found = user_error(exc) or _unreadable(path, exc)
            if found is None:
                raise
            raise found from exc
        want = len(self.cfg["patch_size"])
        if image.ndim - 1 != want:
            raise InputError(f"{path}: the image has {image.ndim - 1} spatial dimension(s) after loading (shape "
                             f"{tuple(image.shape[1:])}), the model was trained on {want}-D images: give images "
                             "like the training data's (converted the same way)")
        have, need = int(image.shape[0]), self.cfg.get("input_channels")
        if need is not None and have != int(need):
            raise InputError(f"{path}: the image has {have} channel(s), the model was trained on {int(need)}: give "
                             "images like the training data's (converted the same way)")
        self._check_spacing(path, image)
        meta = dict(image.meta) if hasattr(image, "meta") else {}
        array = image.numpy() if hasattr(image, "numpy") else np.asarray(image)
        return array, meta

    def intensity_parameters(self, image: np.ndarray) -> dict:
        """The normalisation of this bundle for ``image`` (from :meth:`load`), whole-image statistics."""
        from auto3dseg.engine.blockwise import intensity_parameters

        return intensity_parameters(image, self.cfg.get("intensity", {}))

    def predict_blocks(self, image: np.ndarray, params: dict | None = None, core: Sequence[int] | None = None,
                       budget_bytes: float | None = None):
        """``(block, prob [C, *core])`` of a raw image from :meth:`load`, block by block; ``core``
        fixes the block cores (an ensemble gives every bundle the same), else the budget sizes them."""
        from auto3dseg.engine.blockwise import predict_blocks

        params = params if params is not None else self.intensity_parameters(image)
        return predict_blocks(self.model, image, self.cfg, self.device, params, budget_bytes=budget_bytes,
                              channels=len(self.channel_names), core=core)

    @torch.no_grad()
    def infer(self, image_file: str | dict, save_mask: bool = False) -> torch.Tensor:
        """Channel-first probabilities on the image's grid, as a MetaTensor carrying its affine
        (the whole map in memory: MONAI's contract; see :meth:`predict_blocks` for large images)."""
        from monai.data import MetaTensor

        image, meta = self.load(image_file)
        prob = predict_array(self.model, image, self.cfg, self.device, params=self.intensity_parameters(image))
        return MetaTensor(prob, meta=meta)
