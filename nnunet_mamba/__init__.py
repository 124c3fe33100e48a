"""nnunet-mamba: Mamba-hybrid networks, fused selective-scan kernels and trainers for nnU-Net v2.

Importing this package is cheap and imports neither torch nor any CUDA module; the
subpackages read top-down: ``kernels`` -> ``layers`` -> ``networks`` -> ``trainers`` -> ``cli``.
"""
__version__ = "0.1.0"
