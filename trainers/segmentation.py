"""Segmentation trainers: one small subclass per network, plus short-schedule variants."""
from __future__ import annotations

import torch

from .base import CpuTestSized, MambaTrainerBase, add_fixed_length_variants


class MambaTrainer(MambaTrainerBase):
    """Our default: ResEnc U-Net + residual multi-directional Mamba mixers at low resolution."""
    network_name = "mamba_resenc"


class MambaTrainerFast(MambaTrainerBase):
    """MambaTrainer's network with 2 scan directions (raster, both ways) at stage n-2 and all at the bottleneck:
    a shorter training step than MambaTrainer's (benchmarks/NETWORK_NOTES.md has the measurements)."""
    network_name = "mamba_resenc"
    network_options = {"directions": [2, None]}


class NoMambaTrainer(MambaTrainerBase):
    """The ablation: MambaTrainer's network with the Mamba mixers removed."""
    network_name = "nomamba"


class UMambaBotTrainer(MambaTrainerBase):
    """U-Mamba Bot (Ma et al. 2024), built from the plans as bowang-lab/U-Mamba's trainer builds it."""
    network_name = "umamba_bot"


class UMambaEncTrainer(MambaTrainerBase):
    """U-Mamba Enc (Ma et al. 2024), built from the plans (and patch size) as bowang-lab/U-Mamba's trainer does."""
    network_name = "umamba_enc"


class SingleOutput:
    """Mixin for networks with one output, as their authors built them (no deep supervision): nnU-Net's loss and
    targets at full resolution only. Put it first: ``class X(SingleOutput, MambaTrainerBase)``."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.enable_deep_supervision = False

    def set_deep_supervision_enabled(self, enabled: bool):
        """One output: there is nothing to switch."""


class SegMambaTrainer(SingleOutput, MambaTrainerBase):
    """SegMamba (Xing et al. 2024) as ge-xing/SegMamba builds it: its widths and depths, one output; channels in
    and out from the dataset. Trained with nnU-Net's pipeline and Dice + CE loss."""
    network_name = "segmamba"


class LightMUNetTrainer(SingleOutput, MambaTrainerBase):
    """LightM-UNet (Liao et al. 2024) as MrBlankness/LightM-UNet's trainer builds it (init_filters 32, blocks
    1,2,2,4 / 1,1,1; 2D or 3D from the plans' dimensionality), one output."""
    network_name = "lightmunet"


class NnMambaTrainer(SingleOutput, MambaTrainerBase):
    """nnMamba (Gong et al. 2024), the MICCSS segmentation network of lhaof/nnMamba (3D), one output."""
    network_name = "nnmamba"


class VMUNetTrainer(SingleOutput, MambaTrainerBase):
    """VM-UNet (Ruan and Xiang 2024) as JCruan519/VM-UNet builds it (2D; VMamba-S widths, no ImageNet weights),
    one output."""
    network_name = "vmunet"


class SwinUMambaTrainer(MambaTrainerBase):
    """Swin-UMamba (Liu et al. 2024) as JiarunLiu/Swin-UMamba's trainer builds it (2D; VMamba-T encoder without
    its ImageNet weights); its four deep-supervision outputs at 1, 1/2, 1/4 and 1/8 of the patch."""
    network_name = "swin_umamba"

    def _get_deep_supervision_scales(self):
        if not self.enable_deep_supervision:
            return None
        return [[1.0 / 2 ** i] * len(self.configuration_manager.patch_size) for i in range(4)]

    def set_deep_supervision_enabled(self, enabled: bool):
        self.eager_network.deep_supervision = enabled


# --- short schedules -------------------------------------------------------------------------
class MambaTrainer_cpu(MambaTrainer):
    """MambaTrainer sized for a laptop CPU and the 2d configuration: half width, one mixer (at the bottleneck),
    batch 16, 2,000 iterations, no test-time mirroring. What the README demo trains (its held-out Dice:
    benchmarks/results/demo_cpu.json)."""
    schedule = dict(num_epochs=20, num_iterations_per_epoch=100, num_val_iterations_per_epoch=4, save_every=5)
    batch_size_override = 16
    width_multiplier = 0.5
    network_options = {"mixer_stages": (-1,)}
    test_time_mirroring = False


class NoMambaTrainer_cpu(NoMambaTrainer):
    """MambaTrainer_cpu's ablation: the same network and schedule without the Mamba mixer."""
    schedule = MambaTrainer_cpu.schedule
    batch_size_override = MambaTrainer_cpu.batch_size_override
    width_multiplier = MambaTrainer_cpu.width_multiplier
    test_time_mirroring = MambaTrainer_cpu.test_time_mirroring


class MambaTrainer_ci(CpuTestSized, MambaTrainer):
    """A few iterations for CI (batch 2, half width, checkpoint every epoch)."""


class NoMambaTrainer_ci(CpuTestSized, NoMambaTrainer):
    pass


class UMambaBotTrainer_ci(CpuTestSized, UMambaBotTrainer):
    pass


class UMambaEncTrainer_ci(CpuTestSized, UMambaEncTrainer):
    pass


class SegMambaTrainer_ci(CpuTestSized, SegMambaTrainer):
    """SegMamba's architecture at CPU-test size (widths 8, 8, 16, 16, hidden 32, one Mamba layer per stage)."""
    network_options = {"depths": (1, 1, 1, 1), "feat_size": (8, 8, 16, 16), "hidden_size": 32}


class LightMUNetTrainer_ci(CpuTestSized, LightMUNetTrainer):
    network_options = {"init_filters": 8, "blocks_down": (1, 1, 2), "blocks_up": (1, 1)}


class NnMambaTrainer_ci(CpuTestSized, NnMambaTrainer):
    network_options = {"channels": 8, "blocks": 2}


class VMUNetTrainer_ci(CpuTestSized, VMUNetTrainer):
    network_options = {"dims": (8, 16, 32, 64), "dims_decoder": (64, 32, 16, 8), "depths": (1, 1, 1, 1),
                       "depths_decoder": (1, 1, 1, 1)}


class SwinUMambaTrainer_ci(CpuTestSized, SwinUMambaTrainer):
    network_options = {"feat_size": (4, 4, 8, 16, 32), "hidden_size": 32, "depths": (1, 1, 1, 1)}


# Fixed-length variants, named like nnU-Net's own (nnUNetTrainer_20epochs, ...), so that a comparison
# with nnUNetTrainer on the same budget needs no code: e.g. MambaTrainer_20epochs vs nnUNetTrainer_20epochs.
SCHEDULE_LENGTHS = (2, 5, 10, 20, 50, 100, 250)
_BASES = (MambaTrainer, MambaTrainerFast, NoMambaTrainer, UMambaBotTrainer, UMambaEncTrainer, SegMambaTrainer,
          LightMUNetTrainer, NnMambaTrainer, VMUNetTrainer, SwinUMambaTrainer)


add_fixed_length_variants(globals(), _BASES, SCHEDULE_LENGTHS)
