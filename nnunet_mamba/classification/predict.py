"""Classify raw images with a trained classifier model folder (nnU-Net's preprocessing of the plans,
fold ensembling by averaging softmax probabilities)."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from ..checkpoints import model_folds, read_checkpoint
from .inference import network_input, predict_logits, softmax
from .labels import class_names as read_class_names, prior_corrected_logits


def classifier_trainer_class(name: str) -> type:
    """The trainer class named in a checkpoint; must be one of our classification trainers."""
    import nnunet_mamba.trainers as ours
    from nnunet_mamba.trainers.classification import MambaClassifierTrainer
    cls = getattr(ours, name, None)
    if cls is None:
        from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name
        cls = recursive_find_trainer_class_by_name(name)
    if not (isinstance(cls, type) and issubclass(cls, MambaClassifierTrainer)):
        raise ValueError(f"trainer {name!r} is not a classification trainer (MambaClassifierTrainer or a subclass); "
                         "use nnUNetv2_predict for segmentation models")
    return cls


@dataclass
class ClassifierModel:
    plans_manager: PlansManager
    configuration_name: str
    dataset_json: dict
    class_names: list
    networks: list = field(default_factory=list)  # (network, patch size, test-time mirror axes, class prior) per fold
    device: torch.device = torch.device("cpu")

    @classmethod
    def from_folder(cls, folder: str | Path, folds: Optional[Sequence[str]] = None,
                    checkpoint: str = "checkpoint_final.pth", device: str = "cpu") -> "ClassifierModel":
        folder = Path(folder)
        for name in ("plans.json", "dataset.json"):
            if not (folder / name).is_file():
                raise FileNotFoundError(f"{folder}: not a trained model folder ({name} missing); pass the "
                                        "<Trainer>__<Plans>__<configuration> folder that holds fold_X/")
        dataset_json = json.loads((folder / "dataset.json").read_text())
        names = read_class_names(dataset_json)
        pm = PlansManager(str(folder / "plans.json"))
        dev = torch.device(device)
        model = cls(pm, "", dataset_json, names, device=dev)
        for f in model_folds(folder, checkpoint, folds):
            path = folder / f"fold_{f}" / checkpoint
            ckpt = read_checkpoint(path)
            trainer = classifier_trainer_class(ckpt.get("trainer_name", "?"))
            config = ckpt["init_args"]["configuration"]
            if model.configuration_name and config != model.configuration_name:
                raise ValueError(f"{path}: configuration {config!r} differs from the other folds' "
                                 f"{model.configuration_name!r}")
            model.configuration_name = config
            cm = pm.get_configuration(config)
            n_in = determine_num_input_channels(pm, cm, dataset_json)
            net = trainer.build_network_architecture(pm, cm, n_in, len(names), False)
            net.load_state_dict(ckpt["network_weights"])
            patch = (ckpt.get("classification") or {}).get("patch_size") or cm.patch_size
            mirror = ckpt.get("inference_allowed_mirroring_axes")
            prior = (ckpt.get("classification") or {}).get("class_prior")  # None: a checkpoint without one
            model.networks.append((net.to(dev).eval(), list(patch), mirror, prior))
        return model

    @property
    def configuration_manager(self):
        return self.plans_manager.get_configuration(self.configuration_name)

    def preprocess(self, files: Sequence[str]) -> np.ndarray:
        """nnU-Net's preprocessing of the plans, with the whole-image mask the training cases had as their label
        (without it nnU-Net would normalise within the nonzero region only, unlike training)."""
        pre = self.configuration_manager.preprocessor_class(verbose=False)
        try:
            data, props = self.plans_manager.image_reader_writer_class().read_images(list(files))
            whole = np.ones((1, *data.shape[1:]), dtype=np.int8)
            data, _, _ = pre.run_case_npy(data, whole, props, self.plans_manager, self.configuration_manager,
                                          self.dataset_json)
        except Exception as e:
            raise RuntimeError(f"{files[0]}: cannot be read or preprocessed ({type(e).__name__}: "
                               f"{str(e)[:200]})") from None
        return data

    def probabilities(self, preprocessed: Sequence[np.ndarray]) -> np.ndarray:
        """Mean softmax over folds, (N, classes); each fold mirrors and corrects for its training prior as its
        trainer validated."""
        total = 0
        for net, patch, mirror, prior in self.networks:
            inputs = [network_input(d, patch, net.total_stride) for d in preprocessed]
            logits = predict_logits(net, inputs, self.device, mirror_axes=mirror)
            total = total + softmax(prior_corrected_logits(logits, prior))
        return total / len(self.networks)

    def predict_cases(self, cases: dict[str, list[str]], batch: int = 32,
                      progress: Optional[Callable[[int, int], None]] = None) -> tuple[list[str], np.ndarray]:
        names = sorted(cases)
        out = []
        for start in range(0, len(names), batch):
            chunk = names[start:start + batch]
            out.append(self.probabilities([self.preprocess(cases[c]) for c in chunk]))
            if progress:
                progress(start + len(chunk), len(names))
        return names, np.concatenate(out) if out else np.zeros((0, len(self.class_names)))


def find_cases(folder: str | Path, file_ending: str, num_channels: int) -> dict[str, list[str]]:
    """case -> channel files (``<case>_<XXXX><file_ending>``, nnU-Net's naming), every channel present."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder")
    pattern = re.compile(rf"^(?P<case>.+)_(?P<ch>\d{{4}}){re.escape(file_ending)}$")
    found: dict[str, dict[int, str]] = {}
    for p in sorted(folder.iterdir()):
        if not p.name.endswith(file_ending):
            continue
        m = pattern.match(p.name)
        if not m:
            raise ValueError(f"{p}: not named <case>_<XXXX>{file_ending} (nnU-Net's channel naming)")
        found.setdefault(m["case"], {})[int(m["ch"])] = str(p)
    if not found:
        raise FileNotFoundError(f"{folder}: no images ending in {file_ending}")
    for case, chans in found.items():
        if sorted(chans) != list(range(num_channels)):
            raise ValueError(f"{folder}: case {case!r} has channel(s) {sorted(chans)}; the model expects "
                             f"{num_channels} channel(s) 0..{num_channels - 1}")
    return {c: [ch[i] for i in range(num_channels)] for c, ch in found.items()}
