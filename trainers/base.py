"""Base class of every nnunet-mamba trainer: network from our registry, atomic checkpoints.

Subclasses set class attributes only, so that nnU-Net's predictor (which calls
``build_network_architecture`` on the class, without an instance) builds the same network:

* ``network_name`` / ``network_options``: entry of :mod:`nnunet_mamba.networks.registry`;
* ``schedule``: overrides of nnU-Net's training-length attributes (``num_epochs``, ...);
* ``batch_size_override``: a fixed batch size instead of the plans' (single-GPU runs);
* ``width_multiplier``: scales the plans' ``features_per_stage`` (e.g. 0.5 for a CPU-sized network);
* ``test_time_mirroring``: False keeps mirroring as augmentation but not at validation/inference
  (stored in the checkpoint, so ``nnUNetv2_predict`` follows it): 8x faster inference in 3D;
* ``max_consecutive_nonfinite_steps``: a step whose loss or gradient is NaN/Inf is skipped and
  logged; this many in a row stop training with a clear error instead of training on NaNs;
* ``amp_dtype``: None keeps nnU-Net's CUDA AMP (float16 with a GradScaler); ``torch.bfloat16`` trains under
  bf16 autocast without a scaler (fp32's exponent range), where the GPU supports it;
* ``fp16_fallback_after``: under float16 AMP, this many non-finite losses in a row (a forward overflow: fp16 ends
  at 65504, which a Mamba stage's growing residual stream can reach) switch the rest of the run to bf16 autocast,
  or to float32 on a GPU without bf16, instead of stopping (logged).

Reproducible runs: with ``NNUNET_MAMBA_SEED=<int>`` the Python, NumPy and torch generators are seeded
before the network is built; with ``nnUNet_n_proc_DA=0`` (augmentation in the main process) two CPU
runs then give identical losses (tested).
"""
from __future__ import annotations

import os
import random
import time
from typing import Optional

import numpy as np
import torch
from torch import autocast, nn
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.helpers import dummy_context

from nnunet_mamba.checkpoints import read_checkpoint
from nnunet_mamba.kernels import compile_training_step
from nnunet_mamba.networks import build_network, from_configuration, guard_fp16_inference


class MambaTrainerBase(nnUNetTrainer):
    network_name: str = "mamba_resenc"
    network_options: dict = {}
    schedule: dict = {}
    batch_size_override: Optional[int] = None
    width_multiplier: float = 1.0
    test_time_mirroring: bool = True
    max_consecutive_nonfinite_steps: int = 5
    amp_dtype: Optional[torch.dtype] = None
    fp16_fallback_after: int = 2
    _nonfinite_in_a_row: int = 0

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        for key, value in self.schedule.items():
            if not hasattr(self, key):
                raise AttributeError(f"{type(self).__name__}.schedule sets unknown trainer attribute {key!r}")
            setattr(self, key, value)
        if self.amp_dtype == torch.bfloat16 and self.device.type == "cuda" and torch.cuda.is_bf16_supported():
            self.grad_scaler = None  # bf16 needs no loss scaling
        elif self.amp_dtype is not None and self.amp_dtype != torch.float16:
            self.amp_dtype = None  # e.g. bf16 requested on a GPU without it: nnU-Net's fp16 + GradScaler

    def autocast(self):
        """The training/validation autocast context: nnU-Net's on CUDA (dtype ``amp_dtype`` if set), none on CPU
        or with ``amp_dtype = torch.float32``."""
        if self.device.type != "cuda" or self.amp_dtype == torch.float32:
            return dummy_context()
        return autocast(self.device.type, enabled=True, dtype=self.amp_dtype or torch.float16)

    def validation_step(self, batch: dict) -> dict:
        """nnU-Net's validation step under our autocast: its own ``autocast(enabled=True)`` inherits the dtype
        (bf16 stays bf16; float32 runs are validated under nnU-Net's fp16)."""
        with self.autocast():
            return super().validation_step(batch)

    def _training_in_fp16(self) -> bool:
        return self.device.type == "cuda" and self.amp_dtype in (None, torch.float16)

    def _widen_amp(self) -> None:
        """Leave float16 AMP for the rest of the run: bf16 autocast where the GPU has it, else float32."""
        self.amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
        self.grad_scaler = None  # neither needs loss scaling
        self.print_to_log_file(f"{self._nonfinite_in_a_row} non-finite losses in a row under float16 AMP (a forward "
                               f"overflow): training goes on under {str(self.amp_dtype).replace('torch.', '')}")
        self._nonfinite_in_a_row = 0

    @classmethod
    def arch_kwargs(cls, configuration_manager) -> dict:
        """The plans' network kwargs, widths scaled by ``width_multiplier``."""
        arch_kwargs = from_configuration(configuration_manager)
        if cls.width_multiplier != 1.0:
            arch_kwargs["features_per_stage"] = [max(4, int(round(f * cls.width_multiplier)))
                                                 for f in arch_kwargs["features_per_stage"]]
        return arch_kwargs

    @classmethod
    def build_network_architecture(cls, plans_manager, configuration_manager, num_input_channels: int,
                                   num_output_channels: int, enable_deep_supervision: bool = True) -> nn.Module:
        arch_kwargs = cls.arch_kwargs(configuration_manager)
        patch_size = getattr(configuration_manager, "patch_size", None)  # for networks built for one patch size
        network = build_network(cls.network_name, arch_kwargs, num_input_channels, num_output_channels,
                                enable_deep_supervision, patch_size=patch_size, **cls.network_options)
        if hasattr(network, "initialize"):
            network.apply(network.initialize)
        return guard_fp16_inference(network)  # nnU-Net's predictor runs it under float16 autocast

    def configure_rotation_dummyDA_mirroring_and_inital_patch_size(self):
        rotation, dummy_2d, patch, mirror_axes = super().configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        if not self.test_time_mirroring:
            self.inference_allowed_mirroring_axes = None
        return rotation, dummy_2d, patch, mirror_axes

    def _set_batch_size_and_oversample(self):
        super()._set_batch_size_and_oversample()
        if self.batch_size_override is not None and not self.is_ddp:
            self.batch_size = int(self.batch_size_override)

    def on_train_start(self):
        seed = os.environ.get("NNUNET_MAMBA_SEED")
        if seed is not None:
            if not seed.strip().lstrip("-").isdigit():
                raise ValueError(f"NNUNET_MAMBA_SEED must be an integer, not {seed!r}")
            random.seed(int(seed))
            np.random.seed(int(seed) % 2 ** 32)
            torch.manual_seed(int(seed))
            self.print_to_log_file(f"seeded Python, NumPy and torch with NNUNET_MAMBA_SEED={seed}")
        super().on_train_start()
        self._compile_scan_kernels()

    @property
    def eager_network(self) -> nn.Module:
        """The network itself: without DDP's wrapper and torch.compile's."""
        net = self.network.module if self.is_ddp else self.network
        return getattr(net, "_orig_mod", net)

    def _compile_scan_kernels(self) -> None:
        """On a GPU, the scan kernels of a training step compile now, all at once on a thread pool, instead of one
        by one during the first step (a new machine, or an empty Triton cache). One forward of the eager network
        at the training batch shape does it; torch.compile's graph is not traced here."""
        if self.device.type != "cuda":
            return
        network = self.eager_network
        x = torch.zeros((self.batch_size, self.num_input_channels, *self.configuration_manager.patch_size),
                        device=self.device)
        start = time.perf_counter()
        with torch.no_grad(), self.autocast():
            compiled = compile_training_step(lambda: network(x))
        if compiled:
            self.print_to_log_file(f"{compiled} scan kernels compiled (or read from Triton's cache) ahead of the first "
                                   f"step in {time.perf_counter() - start:.1f} s")

    def _build_loss(self):
        """nnU-Net's loss; with a single deep-supervision output (2-stage plans of tiny images) nnU-Net zeroes
        its only weight and normalises 0/0 -> NaN loss. Give that output weight 1 instead."""
        loss = super()._build_loss()
        weights = getattr(loss, "weight_factors", None)
        if weights is not None and not np.isfinite(weights).all():
            loss.weight_factors = tuple(1.0 / len(weights) for _ in weights)
        return loss

    def train_step(self, batch: dict) -> dict:
        """nnU-Net's training step, plus: a non-finite loss or gradient skips the optimizer step.

        The backward always runs (under DDP every rank must join the gradient all-reduce); the
        decision uses the loss and the clipped gradient norm, which DDP makes equal on all ranks.
        With fp16's GradScaler, inf gradients from a too-large scale are the scaler's business (it
        skips and lowers the scale); only a non-finite loss counts as a fault there, and
        ``fp16_fallback_after`` of them in a row move the run to a wider autocast (all DDP ranks together).
        """
        data = batch["data"].to(self.device, non_blocking=True)
        target = batch["target"]
        target = ([t.to(self.device, non_blocking=True) for t in target] if isinstance(target, list)
                  else target.to(self.device, non_blocking=True))
        self.optimizer.zero_grad(set_to_none=True)
        with self.autocast():
            loss = self.loss(self.network(data), target)
        loss_ok = bool(torch.isfinite(loss.detach()))
        if getattr(self, "is_ddp", False) and self._training_in_fp16():  # every rank leaves fp16 at the same step
            flag = torch.tensor([float(loss_ok)], device=self.device)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MIN)
            loss_ok = bool(flag.item())
        if self.grad_scaler is not None:
            self.grad_scaler.scale(loss).backward()
            self.grad_scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.network.parameters(), 12)
            self.grad_scaler.step(self.optimizer)  # skipped by the scaler when gradients are not finite
            self.grad_scaler.update()
            ok, what = loss_ok, "loss"
        else:
            loss.backward()
            norm = torch.nn.utils.clip_grad_norm_(self.network.parameters(), 12)
            ok = loss_ok and bool(torch.isfinite(norm))
            what = "loss" if not loss_ok else "gradient"
            if ok:
                self.optimizer.step()
            else:
                self.optimizer.zero_grad(set_to_none=True)
        self._record_step(ok, what, loss)
        return {"loss": loss.detach().cpu().numpy() if ok else np.array(np.nan, dtype=np.float32)}

    def _record_step(self, ok: bool, what: str, loss: torch.Tensor) -> None:
        if ok:
            self._nonfinite_in_a_row = 0
            return
        self._nonfinite_in_a_row += 1
        self.print_to_log_file(f"skipped a training step: non-finite {what} (loss {float(loss.detach()):.4g}); "
                               f"{self._nonfinite_in_a_row} in a row")
        if what == "loss" and self._training_in_fp16() and self._nonfinite_in_a_row >= self.fp16_fallback_after:
            self._widen_amp()
            return
        if self._nonfinite_in_a_row >= self.max_consecutive_nonfinite_steps:
            raise RuntimeError(
                f"{self._nonfinite_in_a_row} training steps in a row had a non-finite {what} (epoch "
                f"{self.current_epoch}); stopped instead of training on NaNs. The last complete checkpoint is kept "
                "(resume with --c). Check the data (nnUNetv2_plan_and_preprocess --verify_dataset_integrity) and the "
                "learning rate.")

    def on_train_epoch_end(self, train_outputs: list[dict]):
        """nnU-Net's epoch logging, over the steps that were not skipped."""
        kept = [o for o in train_outputs if np.isfinite(o["loss"]).all()]
        return super().on_train_epoch_end(kept or train_outputs)

    def load_checkpoint(self, filename_or_checkpoint) -> None:
        """nnU-Net's loading, after a check that names the file and the trainer that wrote it when the
        weights do not fit this trainer's network (another trainer, plans or nnunet-mamba version).
        Then :meth:`checkpoint_loaded` gets the checkpoint's contents (read once here)."""
        ckpt = filename_or_checkpoint
        if isinstance(filename_or_checkpoint, str):
            if not self.was_initialized:
                self.initialize()
            ckpt = read_checkpoint(filename_or_checkpoint)
            problem = checkpoint_mismatch(ckpt, self.eager_network, type(self).__name__)
            if problem:
                raise RuntimeError(f"{filename_or_checkpoint}: {problem}")
        super().load_checkpoint(filename_or_checkpoint)
        self.checkpoint_loaded(ckpt)

    def checkpoint_loaded(self, checkpoint: dict) -> None:
        """Called after nnU-Net restored ``checkpoint``: subclasses restore their own keys here."""

    def save_checkpoint(self, filename: str) -> None:
        """Write to a temporary file, then rename: a crash never leaves a truncated checkpoint."""
        tmp = f"{filename}.partial"
        super().save_checkpoint(tmp)
        if os.path.isfile(tmp):
            os.replace(tmp, filename)


def add_fixed_length_variants(namespace: dict, bases, lengths) -> None:
    """Add ``<Base>_<N>epochs`` subclasses, named like nnU-Net's own (``nnUNetTrainer_20epochs``), to a module's
    namespace: the base's schedule with ``num_epochs = N``."""
    for base in bases:
        for epochs in lengths:
            name = f"{base.__name__}_{epochs}epochs"
            namespace[name] = type(name, (base,), {
                "schedule": {**base.schedule, "num_epochs": epochs}, "__module__": namespace["__name__"],
                "__qualname__": name, "__doc__": f"{base.__name__} trained for {epochs} epochs."})


class CpuTestSized:
    """Mixin for the ``*_ci`` trainers of the CPU tests: a few iterations of batch 2 at half width, a checkpoint
    every epoch, no test-time mirroring. Put it first: ``class X_ci(CpuTestSized, X)``."""
    schedule = dict(num_epochs=3, num_iterations_per_epoch=2, num_val_iterations_per_epoch=1, save_every=1)
    batch_size_override = 2
    width_multiplier = 0.5
    test_time_mirroring = False


def weights_mismatch(weights: dict, network: nn.Module) -> tuple[list, list, list]:
    """(missing, unexpected, other-shape) state-dict keys of ``weights`` against ``network`` ('module.' ignored)."""
    theirs = {k[7:] if k.startswith("module.") else k: v for k, v in weights.items()}
    ours = network.state_dict()
    missing = sorted(set(ours) - set(theirs))
    unexpected = sorted(set(theirs) - set(ours))
    shapes = sorted(k for k in set(ours) & set(theirs) if tuple(ours[k].shape) != tuple(theirs[k].shape))
    return missing, unexpected, shapes


def checkpoint_mismatch(checkpoint, network: nn.Module, trainer: str) -> Optional[str]:
    """None if ``checkpoint['network_weights']`` fits ``network``, else a one-paragraph explanation."""
    if not isinstance(checkpoint, dict) or "network_weights" not in checkpoint:
        return "not an nnU-Net training checkpoint (no 'network_weights')"
    missing, unexpected, shapes = weights_mismatch(checkpoint["network_weights"], network)
    if not (missing or unexpected or shapes):
        return None
    who = checkpoint.get("trainer_name", "an unknown trainer")
    example = (missing or unexpected or shapes)[0]
    return (f"written by {who}, whose network does not fit {trainer}'s: {len(missing)} tensor(s) missing, "
            f"{len(unexpected)} unexpected, {len(shapes)} of another shape (first: {example!r}). Use the trainer and "
            f"plans that wrote it (-tr {who}), or start {trainer} from scratch (without --c).")
