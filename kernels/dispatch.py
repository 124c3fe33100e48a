"""Choosing a scan backend: function argument > ``NNUNET_MAMBA_SCAN_BACKEND`` > automatic.

Automatic choice: ``triton`` for CUDA tensors when Triton imports, else ``reference``.
``mamba_ssm`` (the naive multi-direction path over mamba-ssm's CUDA kernel) is only used
when asked for. ``triton`` on CPU tensors runs only under ``TRITON_INTERPRET=1``.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
from types import ModuleType
from typing import Optional

import torch

from .env import getenv

ENV_VAR = "NNUNET_MAMBA_SCAN_BACKEND"
BACKENDS = ("triton", "reference", "mamba_ssm")
_MODULES = {
    "triton": "nnunet_mamba.kernels.triton_scan",
    "reference": "nnunet_mamba.kernels.reference",
    "mamba_ssm": "nnunet_mamba.kernels.mamba_ssm_backend",
}


def triton_interpreting() -> bool:
    return getenv("TRITON_INTERPRET", "0") not in ("", "0")


# Looked up once at import: find_spec inside a torch.compile'd forward would break the graph.
_TRITON_INSTALLED = importlib.util.find_spec("triton") is not None


def triton_available() -> bool:
    return _TRITON_INSTALLED


def mamba_ssm_available() -> bool:
    return importlib.util.find_spec("selective_scan_cuda") is not None


def explain_backend(device: torch.device | str, requested: Optional[str] = None) -> tuple[str, str]:
    """(backend, reason) for tensors on ``device``."""
    device = torch.device(device)
    choice = requested or os.environ.get(ENV_VAR) or "auto"
    choice = choice.strip().lower()
    if choice not in BACKENDS + ("auto",):
        raise ValueError(f"unknown scan backend {choice!r}; choose one of {BACKENDS + ('auto',)} "
                         f"(argument `backend=` or environment variable {ENV_VAR})")
    source = "argument" if requested else (f"${ENV_VAR}" if os.environ.get(ENV_VAR) else "automatic")
    if choice == "auto":
        if device.type == "cuda" and triton_available():
            return "triton", "automatic: CUDA tensors and Triton is installed"
        if device.type == "cuda":
            return "reference", "automatic: CUDA tensors but Triton is not installed (pure-PyTorch reference)"
        if device.type == "cpu" and triton_interpreting() and triton_available():
            return "reference", "automatic: CPU tensors (TRITON_INTERPRET=1 is set; ask for backend='triton' to use it)"
        return "reference", f"automatic: {device.type} tensors use the vectorised PyTorch reference"
    if choice == "triton":
        if not triton_available():
            raise RuntimeError(f"scan backend 'triton' requested ({source}) but Triton is not installed")
        if device.type != "cuda" and not triton_interpreting():
            raise RuntimeError(f"scan backend 'triton' requested ({source}) for {device.type} tensors; "
                               "Triton needs CUDA tensors, or TRITON_INTERPRET=1 to run on the CPU")
    if choice == "mamba_ssm":
        if not mamba_ssm_available():
            raise RuntimeError(f"scan backend 'mamba_ssm' requested ({source}) but mamba-ssm's CUDA extension "
                               "(selective_scan_cuda) is not installed; it is optional: pip install mamba-ssm")
        if device.type != "cuda":
            raise RuntimeError(f"scan backend 'mamba_ssm' requested ({source}) for {device.type} tensors; "
                               "it needs CUDA")
    return choice, f"requested by {source}"


def resolve_backend(device: torch.device | str, requested: Optional[str] = None) -> str:
    return explain_backend(device, requested)[0]


def backend_module(name: str) -> ModuleType:
    """The module implementing ``multidir_scan_fwd`` / ``multidir_scan_bwd`` for a backend."""
    if name not in _MODULES:
        raise ValueError(f"unknown scan backend {name!r}")
    return importlib.import_module(_MODULES[name])
