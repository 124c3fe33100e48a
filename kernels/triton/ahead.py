"""Compile ahead: the first call of each scan problem compiles all the kernels its host code launches at once, on a
pool of threads, instead of one after another as the launches reach them.

A scan problem launches several distinct kernels (summary, carry, forward or backward, parameter-gradient sum), and
a new machine compiles each of them on its first launch. Triton's compiler releases the GIL for most of its work,
so compiling them side by side shortens the first training step by up to the number of kernels. The pass runs the
same host code with launchers that only compile (:func:`.launch.compiling_only`), under Triton's asynchronous
compile mode, and returns once every kernel is compiled; the real call then finds them in Triton's cache. Its
outputs are discarded (their buffers are allocated and freed like the real call's, before it).

Kernels already compiled (in this process or in Triton's on-disk cache) cost the pass a cache lookup per launch,
once per problem. Where Triton has no asynchronous compile mode, or another one is active (Inductor's), or the
kernels are interpreted, nothing runs ahead.
"""
from __future__ import annotations

import os
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Optional

from ..dispatch import triton_interpreting
from .launch import compiling_only

try:
    from triton.runtime._async_compile import AsyncCompileMode, active_mode
except ImportError:  # a Triton without asynchronous compiles
    AsyncCompileMode = active_mode = None

# a scan call compiles at most four distinct kernels (the sequential backward's summary, carry, backward and
# parameter-gradient sum): one thread each
MAX_THREADS = 4

_executor: Optional[ThreadPoolExecutor] = None
_lock = threading.Lock()
_warned = False


def executor() -> ThreadPoolExecutor:
    global _executor
    with _lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(max_workers=min(MAX_THREADS, os.cpu_count() or 1),
                                           thread_name_prefix="nnunet_mamba_compile")
        return _executor


def available() -> bool:
    """Whether :func:`compile_ahead` runs anything here."""
    return AsyncCompileMode is not None and not triton_interpreting() and active_mode.get() is None


def compile_ahead(host_pass: Callable[[], object]) -> bool:
    """Run ``host_pass`` (the host code of one scan call) with compile-only launches and wait until every kernel it
    reached is compiled. Returns whether it ran; a failure is reported once as a warning and leaves the compiles to
    the real call (which then raises whatever is wrong)."""
    global _warned
    if not available():
        return False
    try:
        with compiling_only(), AsyncCompileMode(executor()):
            host_pass()
    except Exception as e:  # noqa: BLE001 - only a speed-up: the real call compiles whatever is missing
        if not _warned:
            _warned = True
            warnings.warn(f"nnunet_mamba: compiling the scan kernels ahead failed ({type(e).__name__}: {e}); they "
                          "compile one by one at their first launch instead", RuntimeWarning, stacklevel=3)
        return False
    return True
