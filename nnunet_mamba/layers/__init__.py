"""Layers: Mamba mixers and blocks built on :mod:`nnunet_mamba.kernels`."""
from .mixer import MultiDirMamba, RasterMamba, SelectiveSSMParams

__all__ = ["MultiDirMamba", "RasterMamba", "SelectiveSSMParams"]
