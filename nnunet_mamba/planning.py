"""Experiment planning for our networks: nnU-Net's ResEnc planner with a memory estimate that knows Mamba.

nnU-Net sizes patch and batch from ``network.compute_conv_feature_map_size(patch)``, compared with a
reference value calibrated for a GPU-memory target. Its estimate counts only convolution feature maps;
our networks add their mixers' activations (``activation_elements`` of the layers, fitted to measured
memory: benchmarks/NETWORK_NOTES.md). :class:`MambaPlanner` builds the chosen network of
our registry for every candidate patch (on the meta device: no memory, no initialisation) and uses
that estimate with nnU-Net's ResEnc M calibration, so a plan targeting N GB should train within N GB.
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
from nnunetv2.experiment_planning.experiment_planners.residual_unets.residual_encoder_unet_planners import (
    ResEncUNetPlanner,
)

from nnunet_mamba.networks import build_network, list_networks, network_dims, resolve_arch_kwargs

#: the trainer that trains each network (for the printed command and the plans' record)
TRAINER_OF = {"mamba_resenc": "MambaTrainer", "nomamba": "NoMambaTrainer", "umamba_bot": "UMambaBotTrainer",
              "umamba_enc": "UMambaEncTrainer", "segmamba": "SegMambaTrainer"}


def default_plans_name(network: str, gpu_memory_gb: float) -> str:
    return f"nnUNetMambaPlans_{network}_{gpu_memory_gb:g}G"


class MambaPlanner(ResEncUNetPlanner):
    """ResEnc M topology and calibration (as ``nnUNetPlannerResEncM``), memory estimate of ``network``."""

    def __init__(self, dataset_name_or_id: Union[str, int], gpu_memory_target_in_gb: float = 8,
                 preprocessor_name: str = "DefaultPreprocessor", plans_name: Optional[str] = None,
                 overwrite_target_spacing: Optional[Sequence[float]] = None, suppress_transpose: bool = False,
                 network: str = "mamba_resenc", network_options: Optional[dict] = None):
        if network not in list_networks():
            raise ValueError(f"unknown network {network!r}; available: {', '.join(list_networks())}")
        super().__init__(dataset_name_or_id, gpu_memory_target_in_gb, preprocessor_name,
                         plans_name or default_plans_name(network, gpu_memory_target_in_gb),
                         overwrite_target_spacing, suppress_transpose)
        self.network = network
        self.network_options = dict(network_options or {})
        # nnUNetPlannerResEncM's calibration: these reference values correspond to 8 GB
        self.UNet_vram_target_GB = gpu_memory_target_in_gb
        self.UNet_reference_val_corresp_GB = 8
        self.UNet_reference_val_3d = 680000000
        self.UNet_reference_val_2d = 135000000
        self.max_dataset_covered = 1

    def static_estimate_VRAM_usage(self, patch_size, input_channels, output_channels, arch_class_name,
                                   arch_kwargs, arch_kwargs_req_import):
        """nnU-Net's estimate for our network: conv feature maps plus mixer activations (per sample); nnU-Net's own
        for a configuration the network does not exist in (SegMamba's 2D)."""
        if len(patch_size) not in network_dims(self.network):
            return super().static_estimate_VRAM_usage(patch_size, input_channels, output_channels, arch_class_name,
                                                      arch_kwargs, arch_kwargs_req_import)
        kwargs = resolve_arch_kwargs(dict(arch_kwargs), list(arch_kwargs_req_import))
        with torch.device("meta"):
            net = build_network(self.network, kwargs, input_channels, output_channels, True, patch_size=patch_size,
                                **self.network_options)
        return net.compute_conv_feature_map_size(patch_size)

    def save_plans(self, plans):
        """nnU-Net's plans plus a record of the network the memory estimate was made for."""
        plans["nnunet_mamba"] = {"network": self.network, "network_options": self.network_options,
                                 "trainer": TRAINER_OF.get(self.network),
                                 "gpu_memory_target_in_gb": self.UNet_vram_target_GB}
        super().save_plans(plans)
