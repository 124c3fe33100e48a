"""nnU-Net trainers (``nnunet_mamba.trainers``), found by the stock CLI through ``nnUNet_extTrainer``."""
from . import segmentation as _segmentation
from .base import MambaTrainerBase

_TRAINERS = {name: obj for name, obj in vars(_segmentation).items()
             if isinstance(obj, type) and issubclass(obj, MambaTrainerBase)}
globals().update(_TRAINERS)

__all__ = ["MambaTrainerBase", *sorted(_TRAINERS)]
