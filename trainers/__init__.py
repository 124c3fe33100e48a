"""nnU-Net trainers (``nnunet_mamba.trainers``), found by the stock CLI through ``nnUNet_extTrainer``."""
from .base import MambaTrainerBase
from .segmentation import (MambaTrainer, MambaTrainer_5epochs, MambaTrainer_50epochs, MambaTrainer_ci,
                           MambaTrainer_demo, NoMambaTrainer, NoMambaTrainer_50epochs, NoMambaTrainer_ci,
                           SegMambaTrainer, SegMambaTrainer_50epochs, UMambaBotTrainer, UMambaBotTrainer_50epochs,
                           UMambaEncTrainer, UMambaEncTrainer_50epochs)

__all__ = ["MambaTrainerBase", "MambaTrainer", "MambaTrainer_5epochs", "MambaTrainer_50epochs", "MambaTrainer_ci",
           "MambaTrainer_demo", "NoMambaTrainer", "NoMambaTrainer_50epochs", "NoMambaTrainer_ci", "SegMambaTrainer",
           "SegMambaTrainer_50epochs", "UMambaBotTrainer", "UMambaBotTrainer_50epochs", "UMambaEncTrainer",
           "UMambaEncTrainer_50epochs"]
