"""The scan's environment switches (``NNUNET_MAMBA_SCAN_*``, ``TRITON_INTERPRET``), read from one snapshot per
operator call: a forward+backward consults them about 50 times, and ``os.environ`` costs about a microsecond per
read (``benchmarks/scan_dispatch_cpu.py``). Outside a snapshot every read goes to ``os.environ``.
"""
from __future__ import annotations

import contextvars
import functools
import os
from typing import Optional

PREFIX = "NNUNET_MAMBA_SCAN_"
_EXTRA = ("TRITON_INTERPRET",)
_SNAPSHOT: contextvars.ContextVar[Optional[dict]] = contextvars.ContextVar("nnunet_mamba_scan_env", default=None)


def getenv(name: str, default: Optional[str] = None) -> Optional[str]:
    """``os.environ.get`` for the scan's switches, from the current snapshot if there is one."""
    snap = _SNAPSHOT.get()
    if snap is None:
        return os.environ.get(name, default)
    return snap.get(name, default)


def snapshot_items() -> tuple:
    """The switches of the current snapshot as a hashable tuple (part of an operator call's launch key)."""
    snap = _SNAPSHOT.get()
    return tuple((_read() if snap is None else snap).items())


def env_count(name: str, default: int) -> int:
    """A non-negative integer switch, ``default`` when unset; a clear error naming the variable otherwise."""
    value = getenv(name, str(default))
    if not value.isdigit():
        raise ValueError(f"{name} must be a non-negative integer, not {value!r}")
    return int(value)


def _read() -> dict:
    data = getattr(os.environ, "_data", None)
    if os.name == "posix" and isinstance(data, dict):  # bytes keys and values: filter before decoding
        prefix = os.fsencode(PREFIX)
        extra = {os.fsencode(k) for k in _EXTRA}
        return {os.fsdecode(k): os.fsdecode(v) for k, v in data.items() if k.startswith(prefix) or k in extra}
    return {k: v for k, v in os.environ.items() if k.startswith(PREFIX) or k in _EXTRA}


def snapshotted(fn):
    """Run ``fn`` with one snapshot of the switches (nested calls share the outer one)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if _SNAPSHOT.get() is not None:
            return fn(*args, **kwargs)
        token = _SNAPSHOT.set(_read())
        try:
            return fn(*args, **kwargs)
        finally:
            _SNAPSHOT.reset(token)
    return wrapper
