"""Classification trainers: a registered backbone (the encoder of a segmentation network) + a pooling head,
trained by nnU-Net on its own plans and preprocessed data.

``nnUNetv2_train DATASET CONFIG FOLD -tr MambaClassifierTrainer`` on a dataset whose dataset.json has a
``classification`` record (:mod:`nnunet_mamba.classification.labels`). Differences from segmentation training:

* the network is :class:`~nnunet_mamba.networks.EncoderClassifier` with one output per class (nnU-Net asks for
  one per segmentation label; the trainer substitutes the class count, see ``_build_for_dataset``);
* the patch is the whole (nnU-Net-cropped) image when the plans' memory budget allows, the batch size scaled to
  the same voxel budget; nnU-Net's augmentation is kept;
* cases are drawn class-balanced (nnU-Net's ``sampling_probabilities``); the loss is cross-entropy;
* every epoch classifies all validation cases (whole images): val loss, accuracy, balanced accuracy and AUC are
  logged, ``checkpoint_best.pth`` is the epoch with the best val AUC, ``progress.png`` plots them;
* the final validation writes ``validation/predictions.csv``, ``validation/summary.json`` and ``roc.png`` +
  ``confusion.png`` in the fold folder.

Options (class attributes, the same for every backbone): ``scale_augmentation`` (False: nnU-Net's augmentation
without its random zoom, for shape masks whose size is a feature), ``test_time_mirroring`` (mean logits over the
training mirrors, every validation), ``validate_best_checkpoint`` (the final validation uses
``checkpoint_best.pth``, the epoch chosen on val AUC, and also records the final epoch's metrics).
"""
from __future__ import annotations

import copy
import math
import os
import time
from os.path import join
from typing import Optional

import numpy as np
import torch
from torch import nn
from nnunetv2.training.dataloading.data_loader import nnUNetDataLoader
from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler
from nnunetv2.utilities.default_n_proc_DA import get_allowed_n_proc_DA
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager
from batchgenerators.dataloading.nondet_multi_threaded_augmenter import NonDetMultiThreadedAugmenter
from batchgenerators.dataloading.single_threaded_augmenter import SingleThreadedAugmenter
from batchgeneratorsv2.transforms.spatial.spatial import SpatialTransform

from nnunet_mamba.checkpoints import read_checkpoint
from nnunet_mamba.classification.inference import network_input, predict_logits, softmax, whole_image_patch
from nnunet_mamba.classification.labels import (balanced_sampling_probabilities, case_classes, class_names,
                                                class_prior, classes_of, prior_corrected_logits)
from nnunet_mamba.classification.metrics import classification_metrics
from nnunet_mamba.classification.outputs import write_json, write_predictions_csv
from nnunet_mamba.classification.plots import plot_confusion, plot_progress, plot_roc
from nnunet_mamba.networks import EncoderClassifier, build_encoder, guard_fp16_inference
from .base import CpuTestSized, MambaTrainerBase, add_fixed_length_variants

_HISTORY = ("val_accuracy", "val_balanced_accuracy", "val_auc")


class MambaClassifierTrainer(MambaTrainerBase):
    """Our default backbone (ResEnc + multi-directional Mamba at low resolution) with a classification head."""
    network_name = "mamba_resenc"
    pooled_stages: tuple = (-2, -1)
    dropout: float = 0.2
    schedule = dict(num_epochs=100, num_iterations_per_epoch=100)
    test_time_mirroring = False
    scale_augmentation: bool = True
    validate_best_checkpoint: bool = False

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.class_names = class_names(dataset_json)
        self.case_classes = case_classes(dataset_json, self.plans_manager.dataset_name)
        self.enable_deep_supervision = False
        self.initial_lr, self.weight_decay = 1e-3, 1e-4
        self.num_val_iterations_per_epoch = 0  # validation is one pass over all validation cases (see below)
        for key, value in self.schedule.items():
            setattr(self, key, value)
        for key in _HISTORY:
            self.logger.local_logger.my_fantastic_logging.setdefault(key, [])
        self.whole_image_patch: Optional[list[int]] = None
        self._class_prior: Optional[list[float]] = None
        # nnU-Net's initialize() passes label_manager.num_segmentation_heads (the labels of the whole-image mask)
        # as the number of outputs; this instance attribute shadows the classmethod so it gets the class count.
        self.build_network_architecture = self._build_for_dataset

    # --- network ---------------------------------------------------------------------------------------
    @classmethod
    def build_network_architecture(cls, plans_manager, configuration_manager, num_input_channels: int,
                                   num_output_channels: int, enable_deep_supervision: bool = True) -> nn.Module:
        """``num_output_channels`` = number of classes (callers outside nnU-Net's trainer pass it)."""
        encoder = build_encoder(cls.network_name, cls.arch_kwargs(configuration_manager), num_input_channels,
                                **cls.network_options)
        return guard_fp16_inference(EncoderClassifier(encoder, num_output_channels, cls.pooled_stages, cls.dropout))

    def _build_for_dataset(self, plans_manager, configuration_manager, num_input_channels: int,
                           num_output_channels: int, enable_deep_supervision: bool = True) -> nn.Module:
        return type(self).build_network_architecture(plans_manager, configuration_manager, num_input_channels,
                                                     len(self.class_names), False)

    def set_deep_supervision_enabled(self, enabled: bool):
        pass  # no decoder

    def _build_loss(self):
        return nn.CrossEntropyLoss()

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.network.parameters(), self.initial_lr, weight_decay=self.weight_decay)
        return optimizer, PolyLRScheduler(optimizer, self.initial_lr, self.num_epochs)

    # --- data ------------------------------------------------------------------------------------------
    def get_training_transforms(self, *args, **kwargs):
        """nnU-Net's training transforms; without random scaling when ``scale_augmentation`` is False."""
        transforms = super().get_training_transforms(*args, **kwargs)
        return transforms if self.scale_augmentation else without_scaling(transforms)

    def _fit_patch_to_images(self, dataset) -> None:
        """Whole-image patch from the training cases' preprocessed shapes (and the batch size to match)."""
        shapes = [dataset.load_case(k)[0].shape[1:] for k in dataset.identifiers]
        plans_patch, plans_batch = self.configuration_manager.patch_size, self.configuration_manager.batch_size
        if len(plans_patch) == 2 and max(s[0] for s in shapes) != 1:
            raise ValueError(f"configuration {self.configuration_name!r} is 2D but the images have several slices; "
                             "a 2D classifier needs single-slice images (use a 3D configuration)")
        patch, whole = whole_image_patch(shapes, plans_patch, self.eager_network.total_stride, plans_batch)
        self._set_patch(patch)
        if self.batch_size_override is None:
            budget = plans_batch * float(np.prod(plans_patch))
            self.batch_size = int(min(plans_batch, max(2, budget // float(np.prod(patch)))))
        what = "whole images" if whole else "the plans' patch: images exceed the memory budget, training sees crops"
        self.print_to_log_file(f"classification patch {patch} ({what}), batch size {self.batch_size}, classes "
                               f"{self.class_names}")

    def _set_patch(self, patch) -> None:
        self.whole_image_patch = [int(p) for p in patch]
        config = copy.deepcopy(self.configuration_manager.configuration)
        config["patch_size"] = self.whole_image_patch
        self.configuration_manager = ConfigurationManager(config)

    def get_dataloaders(self):
        dataset_tr, dataset_val = self.get_tr_and_val_datasets()
        self._fit_patch_to_images(dataset_tr)
        self.val_dataset = dataset_val
        patch = self.configuration_manager.patch_size
        rotation, dummy_2d, initial_patch, mirror = self.configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        transforms = self.get_training_transforms(
            patch, rotation, None, mirror, dummy_2d, use_mask_for_norm=self.configuration_manager.use_mask_for_norm,
            is_cascaded=False, foreground_labels=self.label_manager.foreground_labels, regions=None, ignore_label=None)
        labels = classes_of(dataset_tr.identifiers, self.case_classes)
        self.print_to_log_file(f"training cases per class: {np.bincount(labels, minlength=len(self.class_names))}; "
                               "sampled class-balanced")
        loader = nnUNetDataLoader(dataset_tr, self.batch_size, initial_patch, patch, self.label_manager,
                                  oversample_foreground_percent=0.0,
                                  sampling_probabilities=balanced_sampling_probabilities(labels),
                                  transforms=transforms)
        n_proc = get_allowed_n_proc_DA()
        if n_proc == 0:
            augmenter = SingleThreadedAugmenter(loader, None)
        else:
            augmenter = NonDetMultiThreadedAugmenter(loader, None, n_proc, max(6, n_proc // 2), None,
                                                     pin_memory=self.device.type == "cuda", wait_time=0.002)
        next(augmenter)
        return augmenter, None

    # --- training --------------------------------------------------------------------------------------
    def train_step(self, batch: dict) -> dict:
        target = torch.from_numpy(classes_of(list(batch["keys"]), self.case_classes))
        return super().train_step({"data": batch["data"], "target": target})

    def _classify_mirror_axes(self) -> Optional[list[int]]:
        """The test-time mirrors: MambaTrainerBase already sets them to None unless ``test_time_mirroring``."""
        axes = self.inference_allowed_mirroring_axes
        return None if axes is None else [int(a) for a in axes]

    @property
    def class_prior(self) -> list[float]:
        """Class frequencies of this fold's training cases: the decisions' prior (see prior_corrected_logits)."""
        if self._class_prior is None:
            train_keys, _ = self.do_split()
            self._class_prior = class_prior(classes_of(train_keys, self.case_classes), len(self.class_names)).tolist()
        return self._class_prior

    def _classify(self, dataset, keys) -> tuple[np.ndarray, np.ndarray]:
        """(true classes, logits) of whole cases; the logits are corrected from the balanced sampling to the
        training cases' class frequencies."""
        inputs = [network_input(dataset.load_case(k)[0], self.configuration_manager.patch_size,
                                self.eager_network.total_stride) for k in keys]
        logits = predict_logits(self.network, inputs, self.device, batch_size=max(self.batch_size, 1),
                                mirror_axes=self._classify_mirror_axes())
        return classes_of(keys, self.case_classes), prior_corrected_logits(logits, self.class_prior)

    def on_validation_epoch_end(self, val_outputs: list):
        keys = list(self.val_dataset.identifiers)
        y, logits = self._classify(self.val_dataset, keys)
        loss = float(nn.functional.cross_entropy(torch.from_numpy(logits), torch.from_numpy(y)))
        m = classification_metrics(y, softmax(logits), self.class_names)
        self.logger.log("val_losses", loss, self.current_epoch)
        self.logger.log("val_accuracy", m["accuracy"], self.current_epoch)
        self.logger.log("val_balanced_accuracy", m["balanced_accuracy"], self.current_epoch)
        self.logger.log("val_auc", m["auc"], self.current_epoch)

    def selection_metric(self, epoch: int = -1) -> float:
        """Val AUC (balanced accuracy where AUC is undefined): what picks checkpoint_best.pth."""
        value = self.logger.get_value("val_auc", step=epoch)
        return self.logger.get_value("val_balanced_accuracy", step=epoch) if value is None else value

    def on_epoch_end(self):
        """nnU-Net's epoch end, with classification metrics in the log and the best checkpoint by val AUC."""
        log = self.logger
        log.log("epoch_end_timestamps", time.time(), self.current_epoch)
        auc = log.get_value("val_auc", step=-1)
        self.print_to_log_file(f"train_loss {log.get_value('train_losses', step=-1):.4f}  val_loss "
                               f"{log.get_value('val_losses', step=-1):.4f}  val_acc "
                               f"{log.get_value('val_accuracy', step=-1):.4f}  val_bal_acc "
                               f"{log.get_value('val_balanced_accuracy', step=-1):.4f}  val_auc "
                               f"{'n/a' if auc is None else f'{auc:.4f}'}")
        seconds = log.get_value("epoch_end_timestamps", step=-1) - log.get_value("epoch_start_timestamps", step=-1)
        self.print_to_log_file(f"Epoch time: {seconds:.2f} s")
        if (self.current_epoch + 1) % self.save_every == 0 and self.current_epoch != self.num_epochs - 1:
            self.save_checkpoint(join(self.output_folder, "checkpoint_latest.pth"))
        metric = self.selection_metric()
        if self._best_ema is None or metric > self._best_ema:
            self._best_ema = metric
            self.print_to_log_file(f"New best val {'AUC' if auc is not None else 'balanced accuracy'}: {metric:.4f}")
            self.save_checkpoint(join(self.output_folder, "checkpoint_best.pth"))
        if self.local_rank == 0:
            history = {k: log.get_value(k, step=None) for k in ("train_losses", "val_losses", *_HISTORY)}
            plot_progress(history, join(self.output_folder, "progress.png"), f"{type(self).__name__} fold {self.fold}")
        self.current_epoch += 1

    def save_checkpoint(self, filename: str) -> None:
        """nnU-Net's checkpoint plus ``classification`` (class names, patch size) for predict-class; atomic."""
        if self.local_rank != 0:
            return
        if self.disable_checkpointing:
            self.print_to_log_file("No checkpoint written, checkpointing is disabled")
            return
        checkpoint = {
            "network_weights": self.eager_network.state_dict(),
            "optimizer_state": self.optimizer.state_dict(),
            "grad_scaler_state": self.grad_scaler.state_dict() if self.grad_scaler is not None else None,
            "logging": self.logger.get_checkpoint(),
            "_best_ema": self._best_ema,
            "current_epoch": self.current_epoch + 1,
            "init_args": self.my_init_kwargs,
            "trainer_name": self.__class__.__name__,
            "inference_allowed_mirroring_axes": self.inference_allowed_mirroring_axes,
            "classification": {"class_names": self.class_names, "patch_size": self.whole_image_patch,
                               "class_prior": self.class_prior},
        }
        torch.save(checkpoint, f"{filename}.partial")
        os.replace(f"{filename}.partial", filename)

    def checkpoint_loaded(self, checkpoint: dict) -> None:
        record = checkpoint.get("classification") or {}
        if record.get("patch_size"):
            self._set_patch(record["patch_size"])
        if record.get("class_prior"):
            self._class_prior = list(record["class_prior"])

    # --- final validation ------------------------------------------------------------------------------
    def perform_actual_validation(self, save_probabilities: bool = False):
        """Classify every validation case: predictions.csv, summary.json, roc.png, confusion.png."""
        if self.whole_image_patch is None:  # a checkpoint without the patch: derive it as training did
            self._fit_patch_to_images(self.get_tr_and_val_datasets()[0])
        _, val_keys = self.do_split()
        dataset = self.dataset_class(self.preprocessed_dataset_folder, val_keys)
        keys = list(dataset.identifiers)
        y, logits = self._classify(dataset, keys)
        weights = {"checkpoint": "final epoch", "epoch": self.current_epoch - 1}
        final_epoch = None
        best = join(self.output_folder, "checkpoint_best.pth")
        if self.validate_best_checkpoint and os.path.isfile(best):
            final_epoch = _brief(classification_metrics(y, softmax(logits), self.class_names))
            checkpoint = read_checkpoint(best)
            self.eager_network.load_state_dict(checkpoint["network_weights"])
            weights = {"checkpoint": "checkpoint_best.pth (selected on val AUC)",
                       "epoch": int(checkpoint["current_epoch"]) - 1}
            y, logits = self._classify(dataset, keys)
        probs = softmax(logits)
        metrics = classification_metrics(y, probs, self.class_names)
        folder = join(self.output_folder, "validation")
        os.makedirs(folder, exist_ok=True)
        write_predictions_csv(join(folder, "predictions.csv"), keys, probs, self.class_names, y)
        summary = {"trainer": type(self).__name__, "fold": self.fold, "configuration": self.configuration_name,
                   "epochs_trained": self.current_epoch, "patch_size": self.configuration_manager.patch_size,
                   "selection": {"metric": "val AUC (balanced accuracy where undefined)",
                                 "best_epoch": _best_epoch(self), "best_value": self._best_ema},
                   "weights": weights, "final_epoch": final_epoch,
                   "test_time_mirroring": self._classify_mirror_axes(),
                   "decision": "argmax of the probabilities corrected from class-balanced sampling to the training "
                               "cases' class frequencies (class_prior)",
                   "class_prior": self.class_prior,
                   "scale_augmentation": self.scale_augmentation,
                   **metrics,
                   "history": {k: [None if v is None else float(v) for v in self.logger.get_value(k, step=None)]
                               for k in ("train_losses", "val_losses", *_HISTORY)}}
        write_json(join(folder, "summary.json"), summary)
        title = f"{type(self).__name__} fold {self.fold} (val, {len(keys)} cases)"
        plot_roc(y, probs, self.class_names, join(self.output_folder, "roc.png"), title)
        plot_confusion(metrics["confusion_matrix"], self.class_names, join(self.output_folder, "confusion.png"), title)
        auc = metrics["auc"]
        self.print_to_log_file(f"Validation: accuracy {metrics['accuracy']:.4f}, balanced accuracy "
                               f"{metrics['balanced_accuracy']:.4f}, AUC {'n/a' if auc is None else f'{auc:.4f}'}")


def without_scaling(transforms):
    """nnU-Net's composed training transforms with the random zoom of its one SpatialTransform turned off."""
    spatial = [t for t in getattr(transforms, "transforms", []) if isinstance(t, SpatialTransform)]
    if len(spatial) != 1:
        raise RuntimeError(f"expected one SpatialTransform in nnU-Net's training transforms, found {len(spatial)}")
    spatial[0].p_scaling = 0.0
    return transforms


def _brief(metrics: dict) -> dict:
    return {k: metrics[k] for k in ("auc", "accuracy", "balanced_accuracy", "confusion_matrix")}


def _best_epoch(trainer) -> Optional[int]:
    values = [trainer.selection_metric(e) for e in range(len(trainer.logger.get_value("val_auc", step=None)))]
    values = [-math.inf if v is None else v for v in values]
    return int(np.argmax(values)) if values else None


class NoMambaClassifierTrainer(MambaClassifierTrainer):
    """The ablation: the same classifier on the backbone without Mamba mixers."""
    network_name = "nomamba"


class NnMambaClassifierTrainer(MambaClassifierTrainer):
    """nnMamba's classification network (lhaof/nnMamba ``nnMamba4cls``), 3D, as its authors build it."""
    network_name = "nnmamba_cls"

    @classmethod
    def build_network_architecture(cls, plans_manager, configuration_manager, num_input_channels: int,
                                   num_output_channels: int, enable_deep_supervision: bool = True) -> nn.Module:
        from nnunet_mamba.networks.nnmamba import NnMambaCls
        if len(configuration_manager.patch_size) != 3:
            raise ValueError("nnMamba's classifier is 3D: use a 3d configuration")
        return guard_fp16_inference(NnMambaCls(in_ch=num_input_channels, number_classes=num_output_channels,
                                               **cls.network_options))


class MedMambaClassifierTrainer(MambaClassifierTrainer):
    """MedMamba (Yue and Li 2024, YubiaoYue/MedMamba), 2D, as its authors build it; ``variant`` t, s or b."""
    network_name = "medmamba"
    variant = "t"

    @classmethod
    def build_network_architecture(cls, plans_manager, configuration_manager, num_input_channels: int,
                                   num_output_channels: int, enable_deep_supervision: bool = True) -> nn.Module:
        from nnunet_mamba.networks.medmamba import medmamba
        if len(configuration_manager.patch_size) != 2:
            raise ValueError("MedMamba is 2D: use the 2d configuration")
        return guard_fp16_inference(medmamba(cls.variant, num_input_channels, num_output_channels,
                                             **cls.network_options))


# --- short schedules -------------------------------------------------------------------------------------
_CI = dict(num_epochs=2, num_iterations_per_epoch=3, save_every=1)


class MambaClassifierTrainer_ci(MambaClassifierTrainer):
    """A few iterations for CI (batch 4, half width)."""
    schedule = _CI
    batch_size_override = 4
    width_multiplier = 0.5


class NnMambaClassifierTrainer_ci(NnMambaClassifierTrainer):
    """nnMamba's classifier at CPU-test size (width 8, 2 blocks per stage)."""
    schedule = _CI
    batch_size_override = 4
    network_options = {"channels": 8, "blocks": 2}


class MedMambaClassifierTrainer_ci(MedMambaClassifierTrainer):
    """MedMamba's architecture at CPU-test size (widths 8..64, one block per stage)."""
    schedule = _CI
    batch_size_override = 4
    network_options = {"depths": [1, 1, 1, 1], "dims": [8, 16, 32, 64]}


class NoMambaClassifierTrainer_cpu(NoMambaClassifierTrainer):
    """A CPU sanity run on a small real dataset (half width, 4 epochs x 25 iterations of batch 8); the Mamba
    backbone is too slow on CPU for this (the reference scan), hence NoMamba."""
    schedule = dict(num_epochs=4, num_iterations_per_epoch=25)
    batch_size_override = 8
    width_multiplier = 0.5


class NoMambaClassifierTrainer_ci(NoMambaClassifierTrainer):
    schedule = _CI
    batch_size_override = 4
    width_multiplier = 0.5


SCHEDULE_LENGTHS = (20, 50)
_BASES = (MambaClassifierTrainer, NoMambaClassifierTrainer)


add_fixed_length_variants(globals(), _BASES, SCHEDULE_LENGTHS)


class MambaClassifierTrainer_20epochs_bs32(MambaClassifierTrainer):
    """The GPU benchmark schedule (benchmarks/gpu_classification.sh): 20 x 100 iterations of batch 32."""
    schedule = dict(num_epochs=20, num_iterations_per_epoch=100)
    batch_size_override = 32


class NoMambaClassifierTrainer_20epochs_bs32(NoMambaClassifierTrainer):
    schedule = dict(num_epochs=20, num_iterations_per_epoch=100)
    batch_size_override = 32


class _ShapeMaskBenchmark:
    """The AdrenalMNIST3D benchmark settings (benchmarks/gpu_classification.sh), the same for both backbones:
    20 x 100 iterations of batch 32; no random zoom (the gland's size is a feature of these shape masks: the voxel
    count alone separates the training classes with AUC 0.68); logits averaged over the 8 test-time mirrors; the
    final validation uses the checkpoint chosen on val AUC. Put it first: ``class X(_ShapeMaskBenchmark, X)``."""
    schedule = dict(num_epochs=20, num_iterations_per_epoch=100)
    batch_size_override = 32
    scale_augmentation = False
    test_time_mirroring = True
    validate_best_checkpoint = True


class MambaClassifierTrainer_shape_bs32(_ShapeMaskBenchmark, MambaClassifierTrainer):
    pass


class NoMambaClassifierTrainer_shape_bs32(_ShapeMaskBenchmark, NoMambaClassifierTrainer):
    pass


class NoMambaClassifierTrainer_shape_ci(CpuTestSized, _ShapeMaskBenchmark, NoMambaClassifierTrainer):
    """The benchmark settings at CI size (CpuTestSized turns mirroring off; turned on again here)."""
    schedule = _CI
    batch_size_override = 4
    test_time_mirroring = True
