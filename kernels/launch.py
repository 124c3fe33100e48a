"""Direct launches of already compiled Triton kernels (opt-in: ``NNUNET_MAMBA_SCAN_DIRECT_LAUNCH=1``).

Triton's JIT launch binds and specialises every argument, builds a cache key and then calls the compiled
kernel's C launcher; with the ~50 arguments of the scan kernels that costs tens of microseconds per launch
(37 us on the H100 machine's CPU, against 9 us for the C launcher alone), which bounds small maps
(``benchmarks/scan_launch_overhead.py``). :class:`DirectLauncher` goes through the JIT once per specialisation
and afterwards calls the compiled kernel's launcher itself. Its key holds everything Triton specialises on,
and more (a finer key only costs extra JIT launches): the dtype and 16-byte alignment of every tensor, the type
and value of every other argument (constexprs, integers, flags), the launch options and the device. The interpreter and launch hooks (profilers) always take the JIT path.
"""
from __future__ import annotations

import torch
from triton import knobs

from .env import getenv


def direct_launch_enabled() -> bool:
    return getenv("NNUNET_MAMBA_SCAN_DIRECT_LAUNCH", "0") == "1"


def arg_key(value):
    """What Triton's specialisation can depend on for one argument, cheaply: a tensor's dtype and 16-byte
    alignment; any other value with its type (``True`` and ``1`` compile differently; finer than Triton's key
    for integers: a new value only costs one JIT launch)."""
    if isinstance(value, torch.Tensor):
        return (value.dtype, value.data_ptr() % 16 == 0)
    return (type(value), value)


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

    def __getitem__(self, grid):
        return lambda *args, **kwargs: self.launch(grid, args, kwargs)

    def launch(self, grid, args, kwargs):
        rt = knobs.runtime
        if _active(rt.launch_enter_hook) or _active(rt.launch_exit_hook):
            return self.fn[grid](*args, **kwargs)
        key = (torch.cuda.current_device(), tuple(map(arg_key, args)),
               tuple((name, arg_key(v)) for name, v in kwargs.items()))
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
        self.direct_launches += 1
        n = len(args)
        values = [*args, *(kwargs[name] if name in kwargs else default
                           for name, default in zip(self.names[n:], self.defaults[n:]))]
        g = tuple(grid) + (1,) * (3 - len(grid))
        kernel.run(g[0], g[1], g[2], torch.cuda.current_stream().cuda_stream, kernel.function,
                   kernel.packed_metadata, None, None, None, *values)
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
    """The JIT function itself, or its :class:`DirectLauncher` when direct launches are on (not in the
    interpreter)."""
    from .dispatch import triton_interpreting
    if not direct_launch_enabled() or triton_interpreting():
        return jit_fn
    if id(jit_fn) not in _LAUNCHERS:
        _LAUNCHERS[id(jit_fn)] = (jit_fn, DirectLauncher(jit_fn))
    return _LAUNCHERS[id(jit_fn)][1]
