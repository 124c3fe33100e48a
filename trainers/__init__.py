"""nnU-Net trainers (``nnunet_mamba.trainers``), found by the stock CLI through ``nnUNet_extTrainer``."""
from . import classification as _classification
from . import restoration as _restoration
from . import segmentation as _segmentation
from .base import MambaTrainerBase

_TRAINERS = {name: obj for module in (_segmentation, _classification, _restoration)
             for name, obj in vars(module).items() if isinstance(obj, type) and issubclass(obj, MambaTrainerBase)}
globals().update(_TRAINERS)

__all__ = ["MambaTrainerBase", *sorted(_TRAINERS)]
