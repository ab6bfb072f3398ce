"""Inference of one trained bundle: what each template's ``scripts/infer.py`` exposes.

:class:`InferClass` loads the network once and returns, for an image file, channel-first
probabilities ``[C, *spatial]`` on that image's own grid: sigmoid per class (channel
``i`` = ``class_names[i]``) or, for softmax bundles, ``background`` then the classes.
Large volumes go through sliding windows; with ``sw_device`` on the GPU and the output on
the CPU (the default when the volume is large), GPU memory is bounded by the window batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from auto3dseg.bundles.config import load_bundle_config
from auto3dseg.engine.networks import as_list
from auto3dseg.engine.training import make_model

__all__ = ["LARGE_VOLUME_VOXELS", "InferClass", "load_trained_model", "mirror_pad", "predict_array"]

#: above this many voxels the stitched output is kept on the CPU
LARGE_VOLUME_VOXELS = 256**3


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
def predict_array(model: torch.nn.Module, image: torch.Tensor, cfg: dict, device: torch.device,
                  output_device: torch.device | None = None) -> torch.Tensor:
    """Probabilities ``[C, *S]`` for a normalised image ``[in_ch, *S]`` (any size)."""
    from monai.inferers import sliding_window_inference

    spatial = image.shape[1:]
    patch = [int(p) for p in cfg["patch_size"]]
    # pad to at least one patch so the network sees the size it was trained on, with the image's
    # own mirror image: zeros would be a dark band no training patch showed (edge slices of a
    # 10-slice SBEM volume scored Dice 0.04 and 0.00 against 0.45-0.54 inside with zeros)
    x = mirror_pad(image, patch).unsqueeze(0)
    if output_device is None:
        output_device = device if int(np.prod(spatial)) <= LARGE_VOLUME_VOXELS else torch.device("cpu")
    use_amp = bool(cfg.get("amp", True)) and device.type == "cuda"
    with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=use_amp):
        logits = sliding_window_inference(
            x.to(output_device), patch, int(cfg.get("sw_batch_size", 2)), lambda t: as_list(model(t))[0].float(),
            overlap=float(cfg.get("sw_overlap", 0.25)), mode="gaussian", sw_device=device, device=output_device)
    logits = logits[0].float()
    # undo the centred padding
    starts = [(max(p, s) - s) // 2 for p, s in zip(patch, spatial)]
    logits = logits[(slice(None), *[slice(b, b + s) for b, s in zip(starts, spatial)])]
    if cfg.get("output_activation") == "softmax":
        return torch.softmax(logits, 0)
    return logits.sigmoid_()  # in place: a whole-slide image's logits are gigabytes


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
    return InputError(f"{path}: cannot read the image ({reason}); check that it is a complete NIfTI or TIFF file "
                      "(re-convert or re-copy it)")


class InferClass:
    """Load a trained bundle once; :meth:`infer` returns probabilities for an image file.

    Parameters
    ----------
    config_file : str or list of str
        The bundle's YAML files (MONAI's ``get_inferer`` passes every file in ``configs/``).
    **override
        Config values to change (e.g. ``sw_batch_size=4``, ``device="cpu"``,
        ``checkpoint=<path>``). Keys MONAI's ensemble passes for other templates are ignored.
    """

    def __init__(self, config_file: str | Sequence[str] | None = None, **override: Any):
        files = [f for f in ([config_file] if isinstance(config_file, str) else list(config_file or []))
                 if str(f).endswith((".yaml", ".yml"))]
        known = {k: v for k, v in override.items() if k in {"sw_batch_size", "sw_overlap", "amp", "device",
                                                             "checkpoint", "patch_size"}}
        checkpoint = known.pop("checkpoint", None)
        cfg = load_bundle_config(files)
        want = str(known.get("device", cfg.get("device", "auto")))
        self.device = torch.device("cuda" if (want in ("auto", "cuda") and torch.cuda.is_available()) else
                                   (want if want not in ("auto", "cuda") else "cpu"))
        self.model, run_cfg = load_trained_model(cfg, self.device, checkpoint)
        self.cfg = {**run_cfg, **known}
        from auto3dseg.engine.transforms import inference_transforms

        self.transforms = inference_transforms(self.cfg)
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
            print(f"warning: {path} has voxel size {np.round(got, 3).tolist()}, the model was trained at {want}; "
                  "convert it at the training spacing (converters --target_spacing) for meaningful predictions")

    @torch.no_grad()
    def infer(self, image_file: str | dict, save_mask: bool = False) -> torch.Tensor:
        """Channel-first probabilities on the image's grid, as a MetaTensor carrying its affine."""
        from monai.data import MetaTensor

        from auto3dseg.engine.input_checks import user_error

        path = image_file["image"] if isinstance(image_file, dict) else image_file
        if isinstance(path, (str, Path)) and not Path(path).is_file():
            raise FileNotFoundError(f"image not found: {path}")
        try:
            data = self.transforms({"image": path})
        except Exception as exc:  # noqa: BLE001 - MONAI wraps the user's error in "applying transform <...>"
            found = user_error(exc) or _unreadable(path, exc)
            if found is None:
                raise
            raise found from exc
        image = data["image"]
        want = len(self.cfg["patch_size"])
        if image.ndim - 1 != want:
            from auto3dseg.engine.input_checks import InputError

            raise InputError(f"{path}: the image has {image.ndim - 1} spatial dimension(s) after loading (shape "
                             f"{tuple(image.shape[1:])}), the model was trained on {want}-D images: give images "
                             "like the training data's (converted the same way)")
        self._check_spacing(path, image)
        prob = predict_array(self.model, image.as_tensor() if hasattr(image, "as_tensor") else image, self.cfg,
                             self.device)
        meta = dict(image.meta) if hasattr(image, "meta") else {}
        return MetaTensor(prob.cpu(), meta=meta)
