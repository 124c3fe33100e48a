"""Direct launches of already compiled Triton kernels (on by default with the Triton versions they were checked
with; ``NNUNET_MAMBA_SCAN_DIRECT_LAUNCH=0`` turns them off, ``=1`` forces them on with other versions).

Triton's JIT launch binds and specialises every argument, builds a cache key and then calls the compiled
kernel's C launcher; with the ~50 arguments of the scan kernels that costs tens of microseconds per launch
(37 us on the H100 machine's CPU, against 9 us for the C launcher alone), which bounds small maps
(``benchmarks/scan_launch_overhead.py``). :class:`DirectLauncher` goes through the JIT once per specialisation
and afterwards calls the compiled kernel's launcher itself. Its key holds everything Triton specialises on,
and more (a finer key only costs extra JIT launches): the dtype and 16-byte alignment of every tensor, the type
and value of every other argument (constexprs, integers, flags), the launch options and the device. The interpreter
and launch hooks (profilers) always take the JIT path, and so does a launcher whose compiled kernel refuses the
direct call (another Triton's launcher signature): it warns once and stays on the JIT path.
"""
from __future__ import annotations

import warnings

import torch
import triton
from triton import knobs
from triton.runtime import driver

from .env import getenv

# Triton releases whose compiled-kernel launcher (``CompiledKernel.run``) the direct path was checked against on a
# GPU (float64 check of both kernel families, SCAN_NOTES.md sessions 10-11)
CHECKED_TRITON = ("3.6",)


def checked_release(version: str) -> bool:
    """Whether a Triton version string belongs to one of the :data:`CHECKED_TRITON` releases."""
    return version.startswith(tuple(v + "." for v in CHECKED_TRITON))


TRITON_CHECKED = checked_release(triton.__version__)  # once: launcher() asks on every launch


def direct_launch_enabled() -> bool:
    """``NNUNET_MAMBA_SCAN_DIRECT_LAUNCH``: "1" on, "0" off; unset: on with the checked Triton releases."""
    value = getenv("NNUNET_MAMBA_SCAN_DIRECT_LAUNCH")
    if value is None:
        return TRITON_CHECKED
    return value == "1"


def launch_key(args, kwargs) -> tuple:
    """What Triton's specialisation can depend on, cheaply: every tensor's dtype and 16-byte alignment; every other
    value with its type (``True`` and ``1`` compile differently; finer than Triton's key for integers: a new value
    only costs one JIT launch), keyword arguments with their names. One list comprehension per part: about 4 us for
    45 arguments on the development machine, against 7 us for a function call per argument."""
    Tensor = torch.Tensor
    return (tuple([(a.dtype, a.data_ptr() % 16 == 0) if isinstance(a, Tensor) else (a.__class__, a) for a in args]),
            tuple([(k, (v.dtype, v.data_ptr() % 16 == 0) if isinstance(v, Tensor) else (v.__class__, v))
                   for k, v in kwargs.items()]))


class DirectLauncher:
    """``launcher[grid](*args, **kwargs)`` like a ``triton.jit`` function, launching compiled kernels directly
    once the JIT has compiled (or found) them for the same specialisation."""

    MAX_KEYS = 4096  # distinct argument keys kept per kernel (a training run sees a handful of shapes)

    def __init__(self, jit_fn):
        self.fn = jit_fn
        self.names = [p.name for p in jit_fn.params]
        defaults = {name: p.default for name, p in jit_fn.signature.parameters.items() if p.default is not p.empty}
        self.defaults = [defaults.get(name) for name in self.names]
        self.cache = {}
        self.jit_launches = self.direct_launches = 0
        self.broken = False  # the compiled kernel refused a direct call: JIT launches from then on

    def __getitem__(self, grid):
        return lambda *args, **kwargs: self.launch(grid, args, kwargs)

    def launch(self, grid, args, kwargs):
        rt = knobs.runtime
        if self.broken or _active(rt.launch_enter_hook) or _active(rt.launch_exit_hook):
            return self.fn[grid](*args, **kwargs)
        device = driver.active.get_current_device()  # the device and stream calls of Triton's own launch
        key = (device, launch_key(args, kwargs))
        kernel = self.cache.get(key)
        if kernel is None:
            self.jit_launches += 1
            kernel = self.fn[grid](*args, **kwargs)
            if hasattr(kernel, "result"):  # Triton's asynchronous compile mode hands back a future
                kernel = kernel.result()
            if len(self.cache) >= self.MAX_KEYS:
                self.cache.clear()
            self.cache[key] = kernel
            return kernel
        n = len(args)
        values = [*args, *(kwargs[name] if name in kwargs else default
                           for name, default in zip(self.names[n:], self.defaults[n:]))]
        g = tuple(grid) + (1,) * (3 - len(grid))
        try:
            kernel.run(g[0], g[1], g[2], driver.active.get_current_stream(device), kernel.function,
                       kernel.packed_metadata, None, None, None, *values)
        except (TypeError, AttributeError) as e:  # the launcher parses its arguments before launching anything
            self.broken = True
            warnings.warn(f"nnunet_mamba: direct launches of {getattr(self.fn, '__name__', self.fn)} failed "
                          f"({type(e).__name__}: {e}); using Triton's JIT launches (set "
                          "NNUNET_MAMBA_SCAN_DIRECT_LAUNCH=0 to silence this)", RuntimeWarning, stacklevel=3)
            return self.fn[grid](*args, **kwargs)
        self.direct_launches += 1
        return kernel


def _active(hook) -> bool:
    """Whether a launch hook does anything (Triton >= 3.7 keeps an empty ``HookChain`` by default)."""
    return hook is not None and bool(getattr(hook, "calls", True))


_LAUNCHERS: dict = {}


def launch_counts() -> tuple:
    """(JIT launches, direct launches) of every direct launcher so far."""
    launchers = [d for _, d in _LAUNCHERS.values()]
    return sum(d.jit_launches for d in launchers), sum(d.direct_launches for d in launchers)


def launcher(jit_fn):
    """The JIT function itself, or its :class:`DirectLauncher` when direct launches are on (the default with the
    checked Triton releases; never in the interpreter)."""
    from .dispatch import triton_interpreting
    if not direct_launch_enabled() or triton_interpreting():
        return jit_fn
    if id(jit_fn) not in _LAUNCHERS:
        _LAUNCHERS[id(jit_fn)] = (jit_fn, DirectLauncher(jit_fn))
    return _LAUNCHERS[id(jit_fn)][1]
