"""Direct launches of already compiled Triton kernels (opt-in: ``NNUNET_MAMBA_SCAN_DIRECT_LAUNCH=1``).

Triton's JIT launch binds and specialises every argument, builds a cache key and then calls the compiled
kernel's C launcher; with the ~50 arguments of the sequential scan kernels that costs tens of microseconds per
launch, which bounds small maps (``benchmarks/scan_launch_overhead.py``). :class:`DirectLauncher` goes through
the JIT once per specialisation and afterwards calls the compiled kernel's launcher itself. Its key holds
everything Triton specialises on, and more (a finer key only costs extra JIT launches): constexpr values, the
dtype and 16-byte alignment of every tensor, the value of every specialised integer, the width of the others,
the launch options and the device. The interpreter and launch hooks (profilers) always take the JIT path.
"""
from __future__ import annotations

import os

import torch


def direct_launch_enabled() -> bool:
    return os.environ.get("NNUNET_MAMBA_SCAN_DIRECT_LAUNCH", "0") == "1"


def spec_key(value, constexpr: bool, specialise: bool):
    """What Triton's specialisation can depend on for one argument (see the module docstring)."""
    if constexpr:
        return ("c", value)
    if isinstance(value, torch.Tensor):
        return ("t", value.dtype, value.data_ptr() % 16 == 0)
    if isinstance(value, bool) or value is None:
        return ("v", value)
    if isinstance(value, int):
        wide = not -2 ** 31 <= value < 2 ** 31
        return ("i", value if specialise else None, wide)
    if isinstance(value, float):
        return ("f",)
    return ("v", value)


class DirectLauncher:
    """``launcher[grid](*args, **kwargs)`` like a ``triton.jit`` function, launching compiled kernels directly
    once the JIT has compiled (or found) them for the same specialisation."""

    def __init__(self, jit_fn):
        self.fn = jit_fn
        self.params = [(p.name, bool(p.is_constexpr), not p.do_not_specialize) for p in jit_fn.params]
        self.names = {name for name, _, _ in self.params}
        self.defaults = {name: p.default for name, p in jit_fn.signature.parameters.items()
                         if p.default is not p.empty}
        self.cache = {}

    def __getitem__(self, grid):
        return lambda *args, **kwargs: self.launch(grid, args, kwargs)

    def launch(self, grid, args, kwargs):
        from triton import knobs
        hooks = (knobs.runtime.launch_enter_hook, knobs.runtime.launch_exit_hook)
        if any(_active(h) for h in hooks):
            return self.fn[grid](*args, **kwargs)
        values = list(args)
        for name, _, _ in self.params[len(args):]:
            values.append(kwargs[name] if name in kwargs else self.defaults[name])
        options = tuple(sorted((k, v) for k, v in kwargs.items() if k not in self.names))
        key = (torch.cuda.current_device(), options,
               tuple(spec_key(v, c, s) for v, (_, c, s) in zip(values, self.params)))
        kernel = self.cache.get(key)
        if kernel is None:
            kernel = self.fn[grid](*args, **kwargs)
            self.cache[key] = kernel
            return kernel
        g = tuple(grid) + (1,) * (3 - len(grid))
        kernel.run(g[0], g[1], g[2], torch.cuda.current_stream().cuda_stream, kernel.function,
                   kernel.packed_metadata, None, None, None, *values)
        return kernel


def _active(hook) -> bool:
    """Whether a launch hook does anything (Triton >= 3.7 keeps an empty ``HookChain`` by default)."""
    return hook is not None and bool(getattr(hook, "calls", True))


_LAUNCHERS: dict = {}


def launcher(jit_fn):
    """The JIT function itself, or its :class:`DirectLauncher` when direct launches are on (not in the
    interpreter)."""
    from .dispatch import triton_interpreting
    if not direct_launch_enabled() or triton_interpreting():
        return jit_fn
    if id(jit_fn) not in _LAUNCHERS:
        _LAUNCHERS[id(jit_fn)] = (jit_fn, DirectLauncher(jit_fn))
    return _LAUNCHERS[id(jit_fn)][1]
