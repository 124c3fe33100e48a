"""Base class of every nnunet-mamba trainer: network from our registry, atomic checkpoints.

Subclasses set class attributes only, so that nnU-Net's predictor (which calls
``build_network_architecture`` on the class, without an instance) builds the same network:

* ``network_name`` / ``network_options``: entry of :mod:`nnunet_mamba.networks.registry`;
* ``schedule``: overrides of nnU-Net's training-length attributes (``num_epochs``, ...);
* ``batch_size_override``: a fixed batch size instead of the plans' (single-GPU runs);
* ``width_multiplier``: scales the plans' ``features_per_stage`` (e.g. 0.5 for a CPU-sized network);
* ``test_time_mirroring``: False keeps mirroring as augmentation but not at validation/inference
  (stored in the checkpoint, so ``nnUNetv2_predict`` follows it): 8x faster inference in 3D.
"""
from __future__ import annotations

import os
from typing import Optional

import torch
from torch import nn
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunet_mamba.networks import build_network, from_configuration


class MambaTrainerBase(nnUNetTrainer):
    network_name: str = "mamba_resenc"
    network_options: dict = {}
    schedule: dict = {}
    batch_size_override: Optional[int] = None
    width_multiplier: float = 1.0
    test_time_mirroring: bool = True

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        for key, value in self.schedule.items():
            if not hasattr(self, key):
                raise AttributeError(f"{type(self).__name__}.schedule sets unknown trainer attribute {key!r}")
            setattr(self, key, value)

    @classmethod
    def build_network_architecture(cls, plans_manager, configuration_manager, num_input_channels: int,
                                   num_output_channels: int, enable_deep_supervision: bool = True) -> nn.Module:
        arch_kwargs = from_configuration(configuration_manager)
        if cls.width_multiplier != 1.0:
            arch_kwargs["features_per_stage"] = [max(4, int(round(f * cls.width_multiplier)))
                                                 for f in arch_kwargs["features_per_stage"]]
        network = build_network(cls.network_name, arch_kwargs, num_input_channels, num_output_channels,
                                enable_deep_supervision, **cls.network_options)
        if hasattr(network, "initialize"):
            network.apply(network.initialize)
        return network

    def configure_rotation_dummyDA_mirroring_and_inital_patch_size(self):
        rotation, dummy_2d, patch, mirror_axes = super().configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        if not self.test_time_mirroring:
            self.inference_allowed_mirroring_axes = None
        return rotation, dummy_2d, patch, mirror_axes

    def _set_batch_size_and_oversample(self):
        super()._set_batch_size_and_oversample()
        if self.batch_size_override is not None and not self.is_ddp:
            self.batch_size = int(self.batch_size_override)

    def save_checkpoint(self, filename: str) -> None:
        """Write to a temporary file, then rename: a crash never leaves a truncated checkpoint."""
        tmp = f"{filename}.partial"
        super().save_checkpoint(tmp)
        if os.path.isfile(tmp):
            os.replace(tmp, filename)
