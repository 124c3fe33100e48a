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

:func:`compile_training_step` goes further, for trainers: inside it, one forward of the network compiles the
kernels of every scan call of a training step, forward and backward, all at once, and the scan calls return zeros.
"""
from __future__ import annotations

import contextlib
import contextvars
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
# parameter-gradient sum), a whole training step of the published networks 6-12 (benchmarks/compile_ahead.py)
MAX_THREADS = 8

_executor: Optional[ThreadPoolExecutor] = None
_lock = threading.Lock()
_warned = False  # a failure is reported once per process


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


@contextlib.contextmanager
def _compiling_in_parallel():
    """Launches only compile, on the pool; on exit, waits for every compile (and raises the first failure)."""
    with compiling_only(), AsyncCompileMode(executor()) as mode:
        yield mode


def _warn_once(what: str, e: Exception) -> None:
    global _warned
    if not _warned:
        _warned = True
        warnings.warn(f"nnunet_mamba: compiling the scan kernels ahead ({what}) failed ({type(e).__name__}: {e}); "
                      "they compile one by one at their first launch instead", RuntimeWarning, stacklevel=4)


def compile_ahead(host_pass: Callable[[], object]) -> bool:
    """Run ``host_pass`` (the host code of one scan call) with compile-only launches and wait until every kernel it
    reached is compiled. Returns whether it ran. The call's own input errors (``ValueError``: the real call would
    raise the same) propagate unchanged; any other failure is reported once as a warning and leaves the compiles to
    the real call."""
    if not available():
        return False
    invalid_input = None
    try:
        with _compiling_in_parallel():
            try:
                host_pass()
            except ValueError as e:
                invalid_input = e
    except Exception as e:  # noqa: BLE001 - only a speed-up: the real call compiles whatever is missing
        if invalid_input is None:
            _warn_once("one scan call", e)
            return False
    if invalid_input is not None:
        raise invalid_input
    return True


_STEP: contextvars.ContextVar[bool] = contextvars.ContextVar("nnunet_mamba_compiling_step", default=False)


def compiling_step() -> bool:
    """Whether a :func:`compile_training_step` forward is running (in this thread and context)."""
    return _STEP.get()


def compile_training_step(forward: Callable[[], object]) -> Optional[int]:
    """Compile every scan kernel of a training step at once: ``forward()`` runs one forward of the network (no
    autograd needed) in which each scan call runs its host code for its forward and, right after, for its backward
    with compile-only launches, and returns zeros. Returns the number of kernels that were not compiled in this
    process yet (None: nothing ran ahead; a failure is reported once as a warning)."""
    if not available():
        return None
    token = _STEP.set(True)
    try:
        with _compiling_in_parallel() as mode:
            forward()
        return len(mode.future_kernels)
    except Exception as e:  # noqa: BLE001 - only a speed-up: the first step compiles whatever is missing
        _warn_once("a training step", e)
        return None
    finally:
        _STEP.reset(token)
