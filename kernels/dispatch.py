"""Choosing a scan backend: function argument > :func:`~.options.scan_options` or ``NNUNET_MAMBA_SCAN_BACKEND`` >
automatic.

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

from . import options

ENV_VAR = options.ENV["backend"]
BACKENDS = ("triton", "reference", "mamba_ssm")
_MODULES = {
    "triton": "nnunet_mamba.kernels.triton",
    "reference": "nnunet_mamba.kernels.reference",
    "mamba_ssm": "nnunet_mamba.kernels.mamba_ssm_backend",
}


# Triton's own switch, read once: Triton itself decides at import whether its kernels are interpreted
_INTERPRETING = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def triton_interpreting() -> bool:
    return _INTERPRETING


# Looked up once at import: find_spec inside a torch.compile'd forward would break the graph.
_TRITON_INSTALLED = importlib.util.find_spec("triton") is not None


def triton_available() -> bool:
    return _TRITON_INSTALLED


def mamba_ssm_available() -> bool:
    return importlib.util.find_spec("selective_scan_cuda") is not None


def explain_backend(device: torch.device | str, requested: Optional[str] = None) -> tuple[str, str]:
    """(backend, reason) for tensors on ``device``."""
    device = torch.device(device)
    option = options.backend()
    choice = (requested or option or "auto").strip().lower()
    if choice not in BACKENDS + ("auto",):
        raise ValueError(f"unknown scan backend {choice!r}; choose one of {BACKENDS + ('auto',)} "
                         f"(argument `backend=`, scan_options(backend=...) or environment variable {ENV_VAR})")
    source = "argument" if requested else (options.backend_source() if option else "automatic")
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
