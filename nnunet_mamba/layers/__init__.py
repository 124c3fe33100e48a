"""Layers: Mamba mixers and blocks built on :mod:`nnunet_mamba.kernels`."""
from .mamba import Mamba, TriOrientedMamba
from .mixer import MultiDirMamba, SelectiveSSMParams

__all__ = ["Mamba", "MultiDirMamba", "SelectiveSSMParams", "TriOrientedMamba"]
