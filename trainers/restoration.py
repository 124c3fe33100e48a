"""Restoration trainers: a registry U-Net with a residual head, trained on (degraded, clean) pairs.

The dataset comes from ``nnunet-mamba convert degrade``: channel 0 degraded, channel 1 clean, both "noNorm".
nnU-Net's planning, preprocessing, patch sampling and spatial augmentation are used unchanged (spatial transforms
move both channels together); intensity augmentations are left out, because they would change the degradation or
break the pairing. Each batch is split into input (channel 0) and target (channel 1), both divided by the case's
scale from the degraded channel (:func:`nnunet_mamba.restoration.inference.case_scale`).

Loss: L1 + (1 - SSIM), optimiser AdamW (lr 1e-3, nnU-Net's poly decay). Per epoch: validation loss, PSNR and SSIM on
validation patches (PSNR with each patch's clean range); the best checkpoint has the highest moving average of the
validation PSNR. progress.png plots the losses and the validation PSNR (restored and degraded input) and SSIM per epoch.
Final validation: every validation case restored with sliding windows, written as ``validation/<case><ending>`` in the
original geometry and intensity scale, scored against the clean image (PSNR, SSIM 3D) next to the degraded input in
``validation/summary.json``, with slice panels in ``validation/png/``.
"""
from __future__ import annotations

import json
import os
from time import time

import numpy as np
import torch

from nnunet_mamba.networks import guard_fp16_inference
from nnunet_mamba.networks.restorer import build_restorer
from nnunet_mamba.restoration import metrics
from nnunet_mamba.restoration.figures import plot_progress, save_panel
from nnunet_mamba.restoration.inference import (case_scale, make_predictor, restore_preprocessed,
                                                to_original_geometry, write_image)
from nnunet_mamba.restoration.losses import RestorationLoss, ssim as torch_ssim
from .base import CpuTestSized, MambaTrainerBase, add_fixed_length_variants

N_PANELS = 12


def restoration_info(dataset_json: dict, where: str = "dataset.json") -> dict:
    info = dataset_json.get("restoration")
    if not isinstance(info, dict) or len(dataset_json.get("channel_names", {})) != 2:
        raise RuntimeError(f"{where}: not a restoration dataset (needs 2 channels, degraded and clean, and a "
                           "'restoration' entry); make one with `nnunet-mamba convert degrade`")
    return info


def spatial_transforms(patch_size, rotation_for_DA, mirror_axes, do_dummy_2d_data_aug):
    """nnU-Net's spatial augmentation (same parameters) and mirroring, nothing that touches intensities."""
    from batchgeneratorsv2.transforms.spatial.spatial import SpatialTransform
    from batchgeneratorsv2.transforms.spatial.mirroring import MirrorTransform
    from batchgeneratorsv2.transforms.utils.compose import ComposeTransforms
    from batchgeneratorsv2.transforms.utils.pseudo2d import Convert2DTo3DTransform, Convert3DTo2DTransform
    from batchgeneratorsv2.transforms.utils.remove_label import RemoveLabelTansform
    transforms = []
    if do_dummy_2d_data_aug:
        transforms.append(Convert3DTo2DTransform())
        patch_size_spatial = patch_size[1:]
    else:
        patch_size_spatial = patch_size
    transforms.append(SpatialTransform(
        patch_size_spatial, patch_center_dist_from_border=0, random_crop=False, p_elastic_deform=0, p_rotation=0.2,
        rotation=rotation_for_DA, p_scaling=0.2, scaling=(0.7, 1.4), p_synchronize_scaling_across_axes=1,
        bg_style_seg_sampling=False, border_mode_seg="constant", padding_value_seg=-1))
    if do_dummy_2d_data_aug:
        transforms.append(Convert2DTo3DTransform())
    if mirror_axes is not None and len(mirror_axes) > 0:
        transforms.append(MirrorTransform(allowed_axes=mirror_axes))
    transforms.append(RemoveLabelTansform(-1, 0))
    return ComposeTransforms(transforms)


class MambaRestorationTrainer(MambaTrainerBase):
    """Restoration with our default backbone (ResEnc U-Net + multi-directional Mamba) and a residual head."""
    network_name = "mamba_resenc"
    ssim_weight: float = 1.0
    restoration_lr: float = 1e-3
    # bf16 autocast, no GradScaler: under nnU-Net's fp16 AMP a decoder convolution's output of the Mamba restorer
    # exceeds fp16's 65504, fed by a residual stream grown to thousands, with either scan backend, and the loss turns
    # NaN (benchmarks/results/2026-11-27_h100_bc3355e/fp16_bisect/). Where a GPU has no bf16, the base class's fp16
    # fallback moves such a run to float32.
    amp_dtype = torch.bfloat16

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        restoration_info(dataset_json)
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.enable_deep_supervision = False
        if "initial_lr" not in self.schedule:
            self.initial_lr = self.restoration_lr
        self._scales: dict[str, float] = {}
        self._scale_source = None

    # --- network and loss --------------------------------------------------------------------------------------
    @classmethod
    def build_network_architecture(cls, plans_manager, configuration_manager, num_input_channels: int,
                                   num_output_channels: int, enable_deep_supervision: bool = True):
        """Always 1 channel in (degraded) and 1 out (restored), whatever nnU-Net counts from dataset.json."""
        return guard_fp16_inference(build_restorer(cls.network_name, cls.arch_kwargs(configuration_manager),
                                                   **cls.network_options))

    def _build_loss(self):
        return RestorationLoss(self.ssim_weight)

    def configure_optimizers(self):
        """AdamW with nnU-Net's polynomial decay. nnU-Net's SGD (lr 0.01, momentum 0.99) first pushes the residual
        far from the identity (validation PSNR fell from ~35 to ~7 dB within 30 CPU iterations); AdamW at 1e-3
        starts at the identity and improves from there."""
        from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler
        optimizer = torch.optim.AdamW(self.network.parameters(), lr=self.initial_lr, weight_decay=self.weight_decay)
        return optimizer, PolyLRScheduler(optimizer, self.initial_lr, self.num_epochs)

    @staticmethod
    def get_training_transforms(patch_size, rotation_for_DA, deep_supervision_scales, mirror_axes,
                                do_dummy_2d_data_aug, use_mask_for_norm=None, is_cascaded=False,
                                foreground_labels=None, regions=None, ignore_label=None):
        return spatial_transforms(patch_size, rotation_for_DA, mirror_axes, do_dummy_2d_data_aug)

    # --- batches -----------------------------------------------------------------------------------------------
    def _case_scale(self, key: str) -> float:
        if key not in self._scales:
            if self._scale_source is None:
                self._scale_source = self.dataset_class(self.preprocessed_dataset_folder, identifiers=None)
            data = self._scale_source.load_case(key)[0]
            self._scales[key] = case_scale(np.asarray(data[0]))
        return self._scales[key]

    def _pair(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        data = batch["data"]
        if data.shape[1] != 2:
            raise RuntimeError(f"restoration batches need 2 channels (degraded, clean), got {data.shape[1]}")
        s = torch.tensor([self._case_scale(k) for k in batch["keys"]], dtype=data.dtype)
        s = s.view(-1, *([1] * (data.ndim - 1)))
        return data[:, :1] / s, data[:, 1:2] / s

    def train_step(self, batch: dict) -> dict:
        x, y = self._pair(batch)
        return super().train_step({"data": x, "target": y})

    def validation_step(self, batch: dict) -> dict:
        x, y = self._pair(batch)
        x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        with self.autocast():
            pred = self.network(x)
        pred = pred.float()
        loss = self.loss(pred, y)
        dims = tuple(range(1, y.ndim))
        mse = ((pred - y) ** 2).mean(dims)
        rng = (y.amax(dims) - y.amin(dims)).clamp_min(1e-8)
        psnr = (10 * torch.log10(rng ** 2 / mse.clamp_min(1e-12))).mean()
        mse_in = ((x.float() - y) ** 2).mean(dims)
        psnr_in = (10 * torch.log10(rng ** 2 / mse_in.clamp_min(1e-12))).mean()
        return {"loss": loss.detach().cpu().numpy(), "psnr": psnr.cpu().numpy(), "psnr_input": psnr_in.cpu().numpy(),
                "ssim": torch_ssim(pred, y).cpu().numpy()}

    # --- logging and checkpoint selection ------------------------------------------------------------------------
    def _log(self, key: str, value) -> None:
        self.logger.local_logger.my_fantastic_logging.setdefault(key, [])
        self.logger.log(key, value, self.current_epoch)

    def on_validation_epoch_end(self, val_outputs: list[dict]):
        loss = float(np.mean([o["loss"] for o in val_outputs]))
        psnr = float(np.mean([o["psnr"] for o in val_outputs]))
        ssim = float(np.mean([o["ssim"] for o in val_outputs]))
        self._log("val_losses", loss)
        self._log("val_psnr", psnr)
        self._log("val_psnr_input", float(np.mean([o["psnr_input"] for o in val_outputs])))
        self._log("val_ssim", ssim)

    def on_epoch_end(self):
        get = self.logger.get_value
        self.logger.log("epoch_end_timestamps", time(), self.current_epoch)
        self.print_to_log_file("train_loss", np.round(get("train_losses", step=-1), decimals=4))
        self.print_to_log_file("val_loss", np.round(get("val_losses", step=-1), decimals=4))
        psnrs = get("val_psnr", step=None)
        ema = psnrs[0]
        for p in psnrs[1:]:
            ema = 0.9 * ema + 0.1 * p
        self.print_to_log_file(f"val PSNR (patches) {psnrs[-1]:.2f} dB (degraded input: "
                               f"{get('val_psnr_input', step=-1):.2f} dB), moving average {ema:.2f} "
                               f"dB, val SSIM {get('val_ssim', step=-1):.4f}")
        epoch_seconds = get("epoch_end_timestamps", step=-1) - get("epoch_start_timestamps", step=-1)
        self.print_to_log_file(f"Epoch time: {np.round(epoch_seconds, decimals=2)} s")
        if (self.current_epoch + 1) % self.save_every == 0 and self.current_epoch != (self.num_epochs - 1):
            self.save_checkpoint(os.path.join(self.output_folder, "checkpoint_latest.pth"))
        if self._best_ema is None or ema > self._best_ema:
            self._best_ema = ema
            self.print_to_log_file(f"new best moving-average val PSNR: {ema:.2f} dB")
            self.save_checkpoint(os.path.join(self.output_folder, "checkpoint_best.pth"))
        if self.local_rank == 0:
            history = {k: get(k, step=None) for k in ("train_losses", "val_losses", "val_psnr", "val_psnr_input",
                                                      "val_ssim")}
            plot_progress(history, os.path.join(self.output_folder, "progress.png"),
                          f"{type(self).__name__} fold {self.fold}")
        self.current_epoch += 1

    # --- final validation ---------------------------------------------------------------------------------------
    def perform_actual_validation(self, save_probabilities: bool = False):
        from nnunetv2.paths import nnUNet_raw
        self.network.eval()
        if self.local_rank != 0:
            return
        _, val_keys = self.do_split()
        dataset = self.dataset_class(self.preprocessed_dataset_folder, val_keys)
        predictor = make_predictor(self.network, self.plans_manager, self.configuration_manager, self.dataset_json,
                                   self.inference_allowed_mirroring_axes, self.device)
        out_dir = os.path.join(self.output_folder, "validation")
        os.makedirs(os.path.join(out_dir, "png"), exist_ok=True)
        ending = self.dataset_json["file_ending"]
        raw = os.path.join(nnUNet_raw, self.plans_manager.dataset_name, "imagesTr") if nnUNet_raw else None
        reader = self.plans_manager.image_reader_writer_class()
        per_case = []
        for i, k in enumerate(sorted(dataset.identifiers)):
            data, _, _, props = dataset.load_case(k)
            data = np.asarray(data[:])
            restored = to_original_geometry(restore_preprocessed(predictor, data[:1]), props, self.plans_manager,
                                            self.configuration_manager)
            write_image(restored, props, os.path.join(out_dir, k + ending))
            if raw and os.path.isfile(os.path.join(raw, f"{k}_0001{ending}")):
                pair, _ = reader.read_images([os.path.join(raw, f"{k}_{c:04d}{ending}") for c in (0, 1)])
                degraded, clean, source = pair[0], pair[1], "raw"
            else:  # no raw data here: the preprocessed channels, brought back the same way as the prediction
                degraded, clean = (to_original_geometry(data[c], props, self.plans_manager,
                                                        self.configuration_manager) for c in (0, 1))
                source = "preprocessed"
            restored = restored.reshape(clean.shape)
            row = {"case": k, "reference": source, "degraded": metrics.scores(clean, degraded),
                   "restored": metrics.scores(clean, restored)}
            per_case.append(row)
            self.print_to_log_file(f"{k}: PSNR {row['degraded']['PSNR']:.2f} -> {row['restored']['PSNR']:.2f} dB, "
                                   f"SSIM {row['degraded']['SSIM']} -> {row['restored']['SSIM']}")
            if i < N_PANELS and _have("matplotlib"):
                save_panel(os.path.join(out_dir, "png", f"{k}.png"),
                           {"degraded": degraded, "restored": restored, "clean": clean},
                           title=f"{k} ({type(self).__name__})")
        mean = {which: {m: _mean([r[which][m] for r in per_case]) for m in ("PSNR", "SSIM")}
                for which in ("degraded", "restored")}
        summary = {"trainer": type(self).__name__, "degradation": self.dataset_json.get("restoration"),
                   "metrics": "PSNR (dB, data range = clean max - min) and SSIM (3D, Gaussian window sigma 1.5) "
                              "against the clean image, original geometry", "mean": mean, "metric_per_case": per_case}
        tmp = os.path.join(out_dir, ".summary.json.partial")
        with open(tmp, "w") as f:
            json.dump(summary, f, indent=1)
        os.replace(tmp, os.path.join(out_dir, "summary.json"))
        self.print_to_log_file(f"Validation complete: mean PSNR {mean['degraded']['PSNR']:.2f} (degraded) -> "
                               f"{mean['restored']['PSNR']:.2f} dB (restored), SSIM {mean['degraded']['SSIM']}"
                               f" -> {mean['restored']['SSIM']}", also_print_to_console=True)


def _have(module: str) -> bool:
    import importlib.util
    return importlib.util.find_spec(module) is not None


def _mean(values):
    """Mean, or None when a metric could not be computed (SSIM without scikit-image)."""
    return None if any(v is None for v in values) else float(np.mean(values))


class NoMambaRestorationTrainer(MambaRestorationTrainer):
    """The ablation: the same restorer without the Mamba mixers."""
    network_name = "nomamba"


class MambaRestorationTrainer_ci(CpuTestSized, MambaRestorationTrainer):
    """A few CPU iterations for tests (batch 2, half width, no test-time mirroring)."""


class NoMambaRestorationTrainer_ci(CpuTestSized, NoMambaRestorationTrainer):
    pass


add_fixed_length_variants(globals(), (MambaRestorationTrainer, NoMambaRestorationTrainer), (3, 5, 10, 20, 50, 100, 250))
