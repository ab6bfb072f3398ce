"""The shared training engine: masked losses, label expansion after the crop, one real
step per network, validation Dice, checkpoint/resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from auto3dseg.bundles.config import (
    derive_hyper_parameters,
    load_bundle_config,
    output_activation,
)
from auto3dseg.engine import training
from auto3dseg.engine.losses import DeepSupervisionLoss, MaskedDiceBCELoss, MaskedDiceCELoss
from auto3dseg.engine.networks import NETWORKS
from auto3dseg.engine.transforms import (
    IGNORE_VALUE,
    LabelToChannelsd,
    RandCropByLabelClassesd,
    channel_members,
    training_transforms,
)
from auto3dseg.engine.validation import dice_per_class

TINY_NETWORK = {"segresnet": {"init_filters": 8, "dsdepth": 2}, "dints": {"num_blocks": 2, "channel_mul": 0.25},
                "swinunetr": {"feature_size": 12}}


# ----------------------------------------------------------------------------- losses
@pytest.mark.parametrize("loss_cls", [MaskedDiceBCELoss])
def test_unannotated_class_gets_no_gradient(loss_cls):
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 8, 8, 8, requires_grad=True)
    target = (torch.rand(2, 3, 8, 8, 8) > 0.5).float()
    class_mask = torch.tensor([[1.0, 0.0, 1.0], [1.0, 1.0, 0.0]])  # item 0 lacks class 1, item 1 class 2
    loss_cls()(logits, target, class_mask).backward()
    g = logits.grad
    assert g[0, 1].abs().sum() == 0 and g[1, 2].abs().sum() == 0
    assert g[0, 0].abs().sum() > 0 and g[1, 1].abs().sum() > 0 and g[0, 2].abs().sum() > 0


def test_unannotated_class_does_not_change_loss_value():
    torch.manual_seed(1)
    logits = torch.randn(1, 2, 6, 6, 6)
    target = (torch.rand(1, 2, 6, 6, 6) > 0.5).float()
    mask = torch.tensor([[1.0, 0.0]])
    loss = MaskedDiceBCELoss()
    other_target = target.clone()
    other_target[:, 1] = 1 - other_target[:, 1]  # whatever the unannotated class "says"
    assert torch.isclose(loss(logits, target, mask), loss(logits, other_target, mask))
    assert torch.isclose(loss(logits, target, mask), loss(logits[:, :1], target[:, :1], mask[:, :1]))


def test_padded_voxels_get_no_gradient_sigmoid_and_softmax():
    valid = torch.ones(1, 1, 8, 8, 8)
    valid[..., 4:] = 0
    logits = torch.randn(1, 2, 8, 8, 8, requires_grad=True)
    MaskedDiceBCELoss()(logits, torch.ones(1, 2, 8, 8, 8), torch.ones(1, 2), valid).backward()
    assert logits.grad[..., 4:].abs().sum() == 0 and logits.grad[..., :4].abs().sum() > 0
    logits = torch.randn(1, 3, 8, 8, 8, requires_grad=True)
    labels = torch.randint(0, 3, (1, 1, 8, 8, 8))
    labels[..., 4:] = IGNORE_VALUE
    MaskedDiceCELoss()(logits, labels, None, valid).backward()
    assert logits.grad[..., 4:].abs().sum() == 0 and logits.grad[..., :4].abs().sum() > 0


def test_deep_supervision_resizes_targets():
    loss = DeepSupervisionLoss(MaskedDiceBCELoss())
    outs = [torch.zeros(1, 2, 8, 8, 8, requires_grad=True), torch.zeros(1, 2, 4, 4, 4, requires_grad=True)]
    value = loss(outs, torch.ones(1, 2, 8, 8, 8), torch.ones(1, 2), torch.ones(1, 1, 8, 8, 8))
    value.backward()
    assert outs[1].grad is not None and outs[1].grad.abs().sum() > 0


# ----------------------------------------------------------------------------- labels
def test_group_channel_is_union_of_parts_and_padding_is_invalid():
    table = [{"id": 1, "parts": []}, {"id": 2, "parts": []}, {"id": 3, "parts": [1, 2]}]
    lab = torch.tensor([[0, 1, 2, 3, IGNORE_VALUE]], dtype=torch.uint8).reshape(1, 5, 1, 1)
    out = LabelToChannelsd("label", channel_members(table))({"label": lab})
    assert out["label"].shape == (3, 5, 1, 1) and out["label"].dtype == torch.uint8
    assert out["label"][:, :, 0, 0].tolist() == [[0, 1, 0, 0, 0], [0, 0, 1, 0, 0], [0, 1, 1, 1, 0]]
    assert out["valid"].flatten().tolist() == [1, 1, 1, 1, 0]


def test_a_cellmap_class_inside_another_group_counts_for_it():
    """A crop annotating er and er_mem_all (not ne_*) stores er_mem_all on the nuclear envelope; the
    er channel counted only er's own id and its atomic parts: 43% of er was trained as "not er"
    (probe C2). Softmax is then out: the classes overlap."""
    from auto3dseg.bundles.config import output_activation
    from converters.cellmap.class_mapping import build_class_table

    table = build_class_table(["er_mem", "er", "er_mem_all", "nuc"])
    ids = {r["name"]: r["id"] for r in table}
    lab = torch.tensor([[0, ids["er_mem"], ids["er_mem_all"], ids["er"], ids["nuc"]]], dtype=torch.uint8)
    out = LabelToChannelsd("label", channel_members(table))({"label": lab.reshape(1, 5, 1, 1)})
    channels = {r["name"]: out["label"][i, :, 0, 0].tolist() for i, r in enumerate(table)}
    assert channels["er"] == [0, 1, 1, 1, 0]  # er_mem_all ⊂ er
    assert channels["er_mem_all"] == [0, 1, 1, 0, 0]  # er_mem ⊂ er_mem_all; an er voxel may be lumen: not counted
    assert channels["nuc"] == [0, 0, 0, 0, 1]  # er_mem_all shares ne_mem with nuc but is not inside it
    everything = {"class_table": table, "training": [{"annotated_mask": 15}]}
    assert output_activation(everything) == "sigmoid"


def _bundle_cfg(converted, algo="segresnet", tmp_path=None, fold=0, **extra):
    from auto3dseg.analysis.analyze import analyze

    out, _ = converted
    work = out.parent / "engine_work"
    stats = work / "datastats.yaml"
    if not stats.is_file():
        analyze(out / "datalist.json", work, out, workers=0, validate=False)
    dl = json.loads((out / "datalist.json").read_text())
    root = (tmp_path or work) / f"{algo}_{fold}"
    cfg = derive_hyper_parameters(algo, yaml.safe_load(stats.read_text()), dl, datalist_path=out / "datalist.json",
                                  dataroot=out, fold=fold, bundle_root=root, num_epochs=2, patch_size=16)
    cfg.update(num_workers=0, sw_batch_size=4, num_iterations_per_epoch=0)  # one pass per epoch
    cfg["network"].update(TINY_NETWORK[algo])
    cfg.update(extra)
    return cfg


def test_labels_expanded_only_after_the_crop(converted):
    cfg = _bundle_cfg(converted)
    steps = training_transforms(cfg).transforms
    crop = next(i for i, t in enumerate(steps) if isinstance(t, RandCropByLabelClassesd))
    expand = next(i for i, t in enumerate(steps) if isinstance(t, LabelToChannelsd))
    assert expand > crop
    out, _ = converted
    item = json.loads((out / "datalist.json").read_text())["training"][0]
    item = {**item, "image": str(out / item["image"]), "label": str(out / item["label"])}
    samples = training_transforms(cfg)(item)
    assert len(samples) == cfg["num_patches_per_image"]
    s = samples[0]
    assert tuple(s["image"].shape) == (1, *cfg["patch_size"])
    assert tuple(s["label"].shape) == (len(cfg["class_ids"]), *cfg["patch_size"])
    assert s["label"].dtype == torch.uint8 and s["class_mask"].shape == (len(cfg["class_ids"]),)


def test_softmax_only_when_everything_is_annotated(converted):
    out, _ = converted
    dl = json.loads((out / "datalist.json").read_text())
    assert output_activation(dl) == "sigmoid"  # partial crops and groups
    table = [r for r in dl["class_table"] if not r["parts"]]
    full = (1 << len(table)) - 1
    assert output_activation({"class_table": table, "training": [{"annotated_mask": full}] * 2}) == "softmax"


# ----------------------------------------------------------------------------- one step per network
@pytest.mark.parametrize("algo", NETWORKS)
def test_one_training_step_each_network(converted, algo, tmp_path):
    from monai.data import DataLoader, Dataset, list_data_collate

    cfg = _bundle_cfg(converted, algo, tmp_path)
    train_items, _ = training.fold_items(cfg["data_list_file_path"], cfg["dataroot"], 0)
    loader = DataLoader(Dataset(train_items[:1], training_transforms(cfg)), batch_size=1, collate_fn=list_data_collate)
    batch = next(iter(loader))
    torch.manual_seed(0)
    model = training.make_model(cfg)
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss = training.train_step(model, batch, training.make_loss(cfg), opt, torch.device("cpu"))
    assert np.isfinite(loss) and loss > 0
    changed = sum(not torch.equal(a, b.detach()) for a, b in zip(before, model.parameters()))
    assert changed > 0.5 * len(before)


# ----------------------------------------------------------------------------- validation score
def test_dice_per_class_skips_unannotated_and_scores_groups():
    lab = torch.zeros(1, 4, 4, dtype=torch.uint8)
    lab[0, 0] = 1
    lab[0, 1] = 2
    prob = torch.zeros(3, 4, 4)
    prob[0, 0] = 0.9  # class 1 exact
    prob[2, :2] = 0.9  # group {1, 2} exact
    scores = dice_per_class(prob, lab, [[1], [2], [1, 2, 3]], torch.tensor([1.0, 0.0, 1.0]))
    assert scores == [1.0, None, 1.0]
    prob[1] = 0.9  # class 2 predicted everywhere: 4 of 16 true
    assert dice_per_class(prob, lab, [[1], [2], [1, 2, 3]], torch.ones(3))[1] == pytest.approx(8 / 20)


# ----------------------------------------------------------------------------- resume
def test_interrupted_training_resumes_from_last_epoch(converted, tmp_path, monkeypatch, capsys):
    cfg = _bundle_cfg(converted, "segresnet", tmp_path, num_epochs=3)
    real_step = training.train_step
    calls = {"n": 0}
    steps_per_epoch = len(training.fold_items(cfg["data_list_file_path"], cfg["dataroot"], 0)[0])

    def dying_step(*a, **k):
        calls["n"] += 1
        if calls["n"] > steps_per_epoch + 1:  # die in the middle of epoch 2
            raise KeyboardInterrupt
        return real_step(*a, **k)

    monkeypatch.setattr(training, "train_step", dying_step)
    with pytest.raises(KeyboardInterrupt):
        training.train(cfg)
    ckpt = Path(cfg["ckpt_path"])
    state = torch.load(ckpt / "last.pt", weights_only=False)["state"]
    assert state["epoch"] == 1 and not state["finished"]
    first_epoch = state["history"][0]

    monkeypatch.setattr(training, "train_step", real_step)
    capsys.readouterr()
    summary = training.train(cfg)
    assert "resuming from epoch 1 of 3" in capsys.readouterr().out
    assert summary["epochs"] == 3 and summary["finished"] == "completed" and summary["resumed"]
    state = torch.load(ckpt / "last.pt", weights_only=False)["state"]
    assert [h["epoch"] for h in state["history"]] == [1, 2, 3]
    assert state["history"][0] == first_epoch
    progress = yaml.safe_load((ckpt / "progress.yaml").read_text())
    assert progress[-1]["best_avg_dice_score"] == pytest.approx(state["best_metric"])
    assert (ckpt / "progress.png").read_bytes()[:4] == b"\x89PNG"
    # a finished run does nothing more
    capsys.readouterr()
    assert training.train(cfg)["epochs"] == 3
    assert "already trained" in capsys.readouterr().out


def test_resume_refuses_a_checkpoint_of_another_network(converted, tmp_path):
    cfg = _bundle_cfg(converted, "segresnet", tmp_path, num_epochs=1)
    training.train(cfg)
    other = dict(cfg, network={**cfg["network"], "init_filters": 16}, num_epochs=2)
    with pytest.raises(RuntimeError, match="Resume with the same network"):
        training.train(other)


def test_load_bundle_config_overrides(tmp_path):
    f = tmp_path / "hp.yaml"
    f.write_text(yaml.safe_dump({"patch_size": [96, 96, 96], "spatial_dims": 3, "network": {"a": 1}, "amp": True}))
    cfg = load_bundle_config(f"'{f}'", {"patch_size": 64, "network#a": "2", "amp": "false"})
    assert cfg["patch_size"] == [64, 64, 64] and cfg["network"] == {"a": 2} and cfg["amp"] is False


@pytest.mark.parametrize("cache", [False, True])
def test_patches_of_unequal_sides_always_stack(converted, tmp_path, cache):
    """A patch capped by small crops ([24, 16, 32]) is never rotated out of shape: every draw of a
    batch stacks (a rotation in the first plane made [16, 24, 32] patches that failed to collate)."""
    from monai.data import list_data_collate

    cfg = _bundle_cfg(converted, "segresnet", tmp_path, cache=cache)
    cfg["patch_size"] = [24, 16, 32]
    train_items, _ = training.fold_items(cfg["data_list_file_path"], cfg["dataroot"], 0)
    if cache:
        from auto3dseg.engine.training_data import prepare_cache

        prepare_cache(train_items, cfg)
    transforms = training_transforms(cfg)
    for seed in range(8):
        transforms.set_random_state(seed=seed)
        batch = list_data_collate([transforms(dict(train_items[0])), transforms(dict(train_items[-1]))])
        assert tuple(batch["image"].shape[2:]) == (24, 16, 32)


def test_validation_dice_examples_hold():
    """The docstring examples of the per-block Dice counts are run, so they stay true."""
    import doctest

    from auto3dseg.engine import validation

    result = doctest.testmod(validation)
    assert result.attempted >= 3 and result.failed == 0
