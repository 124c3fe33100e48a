"""Model folders trained with the original U-Mamba and SegMamba code, turned into nnU-Net model folders of our
trainers, so that the stock ``nnUNetv2_predict`` (current nnU-Net) runs them without retraining.

* U-Mamba: its fork of nnU-Net 2.1.1 writes ``<results>/<Dataset>/nnUNetTrainerUMamba{Bot,Enc}__<plans>__<cfg>/``
  with ``plans.json`` in nnU-Net 2.1's format and one ``fold_X/checkpoint_*.pth`` per fold. The state dicts load
  into :class:`~nnunet_mamba.networks.umamba.UMamba` unchanged (same module names, same parameter order); the
  plans are rewritten in current nnU-Net's format (its own conversion of old plans) and the trainer name is ours.
* SegMamba: its trainer saves the bare ``state_dict`` of the network, without plans. It is placed in a model
  folder of :class:`SegMambaTrainer` for plans the user names (a dataset preprocessed with nnU-Net); the
  network then is SegMamba's, the preprocessing and sliding-window inference nnU-Net's.

Each checkpoint is checked against the network our trainer builds from the plans before anything is written;
the output folder is written next to its final place and renamed at the end.
"""
from __future__ import annotations

import copy
import json
import os
import shutil
from pathlib import Path
from typing import Optional

#: trainers of the original repositories -> ours
TRAINER_MAP = {
    "nnUNetTrainerUMambaBot": "UMambaBotTrainer",
    "nnUNetTrainerUMambaEnc": "UMambaEncTrainer",
    "nnUNetTrainerUMambaEncNoAMP": "UMambaEncTrainer",
}
CHECKPOINTS = ("checkpoint_final.pth", "checkpoint_best.pth", "checkpoint_latest.pth")


def current_plans(plans: dict) -> dict:
    """``plans`` with every configuration in current nnU-Net's format (nnU-Net's own conversion of 2.1 plans)."""
    from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager
    import warnings

    plans = copy.deepcopy(plans)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nnU-Net warns that it converts old plans: that is the point here
        for name, cfg in plans["configurations"].items():
            if "architecture" not in cfg and "inherits_from" not in cfg:
                plans["configurations"][name] = ConfigurationManager(cfg).configuration
    return plans


def _build(trainer: str, plans: dict, configuration: str, dataset_json: dict):
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
    import nnunet_mamba.trainers as ours

    if not hasattr(ours, trainer):
        raise ValueError(f"unknown trainer {trainer!r}")
    pm = PlansManager(plans)
    if configuration not in pm.available_configurations:
        raise ValueError(f"the plans have no configuration {configuration!r} "
                         f"(available: {', '.join(pm.available_configurations)})")
    cm = pm.get_configuration(configuration)
    n_in = determine_num_input_channels(pm, cm, dataset_json)
    n_out = pm.get_label_manager(dataset_json).num_segmentation_heads
    return getattr(ours, trainer).build_network_architecture(pm, cm, n_in, n_out, False)


def _check_weights(weights: dict, network, source: Path) -> None:
    from nnunet_mamba.trainers.base import weights_mismatch

    missing, unexpected, shapes = weights_mismatch(weights, network)
    if missing or unexpected or shapes:
        example = (missing or unexpected or shapes)[0]
        raise ValueError(f"{source}: its weights do not fit the network built from the plans ({len(missing)} "
                         f"missing, {len(unexpected)} unexpected, {len(shapes)} of another shape; first: "
                         f"{example!r}): another network or other plans than the model folder says")


def _write_folder(out: Path, overwrite: bool, fill) -> Path:
    """Call ``fill(tmp)`` on a temporary sibling of ``out``, then move it into place."""
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists (pass --overwrite to replace it)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".importing")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        fill(tmp)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def import_umamba(model_folder: str | Path, results_root: str | Path, overwrite: bool = False) -> Path:
    """A U-Mamba model folder -> ``<results_root>/<Dataset>/<our trainer>__<plans>__<cfg>/``; returns that folder."""
    import torch
    from nnunet_mamba.checkpoints import read_checkpoint

    src = Path(model_folder)
    for name in ("plans.json", "dataset.json"):
        if not (src / name).is_file():
            raise FileNotFoundError(f"{src / name}: missing (expected a U-Mamba model folder "
                                    "<results>/<Dataset>/nnUNetTrainerUMamba...__<plans>__<configuration>)")
    folds = sorted(p for p in src.glob("fold_*") if p.is_dir() and any((p / c).is_file() for c in CHECKPOINTS))
    if not folds:
        raise FileNotFoundError(f"{src}: no fold_X/checkpoint_*.pth")
    plans = current_plans(json.loads((src / "plans.json").read_text()))
    dataset_json = json.loads((src / "dataset.json").read_text())
    converted = []
    for fold in folds:
        for ckpt_name in CHECKPOINTS:
            path = fold / ckpt_name
            if not path.is_file():
                continue
            ckpt = read_checkpoint(path)
            theirs = ckpt.get("trainer_name")
            if theirs not in TRAINER_MAP:
                raise ValueError(f"{path}: written by {theirs!r}, not by a U-Mamba trainer "
                                 f"({', '.join(TRAINER_MAP)})")
            configuration = ckpt.get("init_args", {}).get("configuration")
            trainer = TRAINER_MAP[theirs]
            weights = {k[7:] if k.startswith("module.") else k: v for k, v in ckpt["network_weights"].items()}
            _check_weights(weights, _build(trainer, plans, configuration, dataset_json), path)
            ckpt.update(network_weights=weights, trainer_name=trainer, imported_from={"trainer": theirs,
                                                                                     "file": str(path)})
            ckpt["init_args"] = {"plans": plans, "configuration": configuration, "fold": ckpt["init_args"].get("fold"),
                                 "dataset_json": dataset_json, "device": torch.device("cuda")}
            converted.append((fold.name, ckpt_name, ckpt))
    trainer, configuration = converted[0][2]["trainer_name"], converted[0][2]["init_args"]["configuration"]
    if any(c["trainer_name"] != trainer or c["init_args"]["configuration"] != configuration for *_, c in converted):
        raise ValueError(f"{src}: its checkpoints come from different trainers or configurations")
    out = Path(results_root) / plans["dataset_name"] / f"{trainer}__{plans['plans_name']}__{configuration}"

    def fill(tmp: Path):
        (tmp / "plans.json").write_text(json.dumps(plans, indent=2))
        (tmp / "dataset.json").write_text(json.dumps(dataset_json, indent=2))
        if (src / "dataset_fingerprint.json").is_file():
            shutil.copy2(src / "dataset_fingerprint.json", tmp / "dataset_fingerprint.json")
        for fold_name, ckpt_name, ckpt in converted:
            (tmp / fold_name).mkdir(exist_ok=True)
            torch.save(ckpt, tmp / fold_name / ckpt_name)
    return _write_folder(out, overwrite, fill)


def import_segmamba(state_dict_file: str | Path, plans_file: str | Path, configuration: str, fold: str,
                    results_root: str | Path, overwrite: bool = False, trainer: str = "SegMambaTrainer") -> Path:
    """SegMamba's saved ``state_dict`` + nnU-Net plans (with ``dataset.json`` beside them) -> a model folder of
    ``trainer`` (SegMambaTrainer or a variant of it) with ``fold_<fold>/checkpoint_final.pth``; returns that folder."""
    import torch

    src, plans_file = Path(state_dict_file), Path(plans_file)
    if not src.is_file():
        raise FileNotFoundError(f"{src}: no such file")
    if not plans_file.is_file() or not (plans_file.parent / "dataset.json").is_file():
        raise FileNotFoundError(f"{plans_file}: need nnU-Net plans with dataset.json beside them "
                                "(nnUNet_preprocessed/<Dataset>/nnUNetPlans.json after nnUNetv2_plan_and_preprocess)")
    try:
        weights = torch.load(src, map_location="cpu", weights_only=True)
    except Exception as e:
        raise RuntimeError(f"{src}: cannot be read ({type(e).__name__}: {str(e)[:200]})") from None
    if isinstance(weights, dict) and "model" in weights and isinstance(weights["model"], dict):
        weights = weights["model"]
    if not isinstance(weights, dict) or not all(torch.is_tensor(v) for v in weights.values()):
        raise ValueError(f"{src}: not a state dict of tensors")
    weights = {k[7:] if k.startswith("module.") else k: v for k, v in weights.items()}
    plans = current_plans(json.loads(plans_file.read_text()))
    dataset_json = json.loads((plans_file.parent / "dataset.json").read_text())
    _check_weights(weights, _build(trainer, plans, configuration, dataset_json), src)
    ckpt = {"network_weights": weights, "trainer_name": trainer, "current_epoch": 0,
            "init_args": {"plans": plans, "configuration": configuration, "fold": fold, "dataset_json": dataset_json,
                          "device": torch.device("cuda")},
            "inference_allowed_mirroring_axes": tuple(range(len(plans["configurations"][configuration]
                                                                 .get("patch_size", (0, 0, 0))))),
            "imported_from": {"trainer": "SegMamba", "file": str(src)}}
    out = Path(results_root) / plans["dataset_name"] / f"{trainer}__{plans['plans_name']}__{configuration}"

    def fill(tmp: Path):
        if out.exists():  # keep the folds already imported
            shutil.copytree(out, tmp, dirs_exist_ok=True)
        (tmp / "plans.json").write_text(json.dumps(plans, indent=2))
        (tmp / "dataset.json").write_text(json.dumps(dataset_json, indent=2))
        (tmp / f"fold_{fold}").mkdir(exist_ok=True)
        torch.save(ckpt, tmp / f"fold_{fold}" / "checkpoint_final.pth")
    if (out / f"fold_{fold}" / "checkpoint_final.pth").exists() and not overwrite:
        raise FileExistsError(f"{out / f'fold_{fold}'} exists (pass --overwrite to replace it)")
    return _write_folder(out, True, fill)


def results_root(given: Optional[str]) -> Path:
    root = given or os.environ.get("nnUNet_results")
    if not root:
        raise ValueError("no output folder: pass -o or set nnUNet_results")
    return Path(root)
