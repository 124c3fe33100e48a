"""The scan's three user options, read from the environment once at import, and :func:`scan_options` to set
them in code.

* ``NNUNET_MAMBA_SCAN_BACKEND`` (option ``backend``): ``triton``, ``reference`` or ``mamba_ssm``; default automatic.
* ``NNUNET_MAMBA_SCAN_DETERMINISTIC`` (``deterministic``): ``1`` a bitwise reproducible backward; default
  ``torch.are_deterministic_algorithms_enabled()``.
* ``NNUNET_MAMBA_SCAN_DIRECT_LAUNCH`` (``direct_launch``): ``0`` every launch through Triton's JIT; default on with
  the checked Triton releases.

``with scan_options(deterministic=True): ...`` overrides them for the code inside (tests, benchmarks); an option
left at ``None`` keeps its value from outside.
"""
from __future__ import annotations

import contextlib
import os
from typing import Optional

import torch

ENV = {"backend": "NNUNET_MAMBA_SCAN_BACKEND", "deterministic": "NNUNET_MAMBA_SCAN_DETERMINISTIC",
       "direct_launch": "NNUNET_MAMBA_SCAN_DIRECT_LAUNCH"}


def _flag(name: str) -> Optional[bool]:
    value = os.environ.get(ENV[name], "").strip().lower()
    if value == "":
        return None
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{ENV[name]} must be 0 or 1, not {value!r}")


_FROM_ENV = {"backend": os.environ.get(ENV["backend"], "").strip().lower() or None,
             "deterministic": _flag("deterministic"), "direct_launch": _flag("direct_launch")}
# Process-wide, like torch.use_deterministic_algorithms: autograd runs CUDA backwards in its own threads, which a
# context variable would not reach.
_OVERRIDE: dict = {}


def _get(name: str):
    value = _OVERRIDE.get(name)
    return _FROM_ENV[name] if value is None else value


def backend() -> Optional[str]:
    """The requested backend (None: automatic)."""
    return _get("backend")


def backend_source() -> str:
    return "scan_options(backend=...)" if _OVERRIDE.get("backend") else f"${ENV['backend']}"


def deterministic() -> bool:
    value = _get("deterministic")
    return torch.are_deterministic_algorithms_enabled() if value is None else bool(value)


def direct_launch() -> Optional[bool]:
    """True / False where asked for; None: the launcher decides (on with the checked Triton releases)."""
    return _get("direct_launch")


def current() -> tuple:
    """The options in force, hashable (part of an operator call's key)."""
    return backend(), deterministic(), direct_launch()


@contextlib.contextmanager
def scan_options(*, backend: Optional[str] = None, deterministic: Optional[bool] = None,
                 direct_launch: Optional[bool] = None):
    """Override the scan options, in every thread of the process, for the duration of the ``with`` block."""
    global _OVERRIDE
    given = {"backend": backend, "deterministic": deterministic, "direct_launch": direct_launch}
    before = _OVERRIDE
    _OVERRIDE = {**before, **{k: v for k, v in given.items() if v is not None}}
    try:
        yield
    finally:
        _OVERRIDE = before
