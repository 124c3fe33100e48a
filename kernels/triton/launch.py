"""Direct launches of already compiled Triton kernels (on by default with the Triton versions they were checked with;
the ``direct_launch`` option, :mod:`..options`, turns them off or forces them on with other versions).

Triton's JIT launch binds and specialises every argument, builds a cache key and then calls the compiled kernel's C
launcher; with the ~50 arguments of the scan kernels that costs several times the C launcher's own time, which
bounds small maps (``benchmarks/scan_launch_overhead.py``). :class:`DirectLauncher` goes through the JIT once per
specialisation and afterwards calls the compiled kernel's launcher itself. Its key holds everything Triton
specialises on, and more (a finer key only costs extra JIT launches): the dtype and 16-byte alignment of every
tensor, the type and value of every other argument (constexprs, integers, flags), the launch options and the device.
The interpreter and launch hooks (profilers) always take the JIT path, and so does a launcher whose compiled kernel
refuses the direct call (another Triton's launcher signature): it warns once and stays on the JIT path.
"""
from __future__ import annotations

import contextlib
import contextvars
import itertools
import warnings
from typing import Optional

import torch
import triton
from triton import knobs
from triton.runtime import driver

from .. import options
from ..dispatch import triton_interpreting

# Triton releases whose compiled-kernel launcher (``CompiledKernel.run``) the direct path was checked against on a
# GPU (float64 check of both kernel families, benchmarks/check_scan_gpu.py)
CHECKED_TRITON = ("3.6",)


def checked_release(version: str) -> bool:
    """Whether a Triton version string belongs to one of the :data:`CHECKED_TRITON` releases."""
    return version.startswith(tuple(v + "." for v in CHECKED_TRITON))


TRITON_CHECKED = checked_release(triton.__version__)  # once: launcher() asks on every launch


def direct_launch_enabled() -> bool:
    """The ``direct_launch`` option where set, else whether this Triton is a checked release."""
    value = options.direct_launch()
    return TRITON_CHECKED if value is None else value


def launch_key(values, ptrs, options) -> tuple:
    """What Triton's specialisation can depend on, cheaply, from the arguments in signature order (``values``),
    their addresses where they are tensors (``ptrs``) and the launch options: every tensor's dtype, whether it is
    on the GPU (a direct launch hands over bare addresses, which nothing checks any more) and its 16-byte
    alignment; every other value with its type (``True`` and ``1`` compile differently; finer than Triton's key
    for integers: a new value only costs one JIT launch). One list comprehension, not a call per argument."""
    Tensor = torch.Tensor
    return (tuple([(v.dtype, v.is_cuda, p % 16 == 0) if isinstance(v, Tensor) else (v.__class__, v)
                   for v, p in zip(values, ptrs)]), options)


# [key, launches so far] of the operator call in progress (see NumberedLaunches)
_SITES: contextvars.ContextVar[Optional[list]] = contextvars.ContextVar("nnunet_mamba_launch_sites", default=None)


class NumberedLaunches:
    """``with NumberedLaunches(key):`` around one operator call whose launches are a function of ``key`` alone
    (every non-tensor argument, every tensor's dtype, device type and alignment, the order of the launches): the
    n-th launch inside is then identified by ``(key, n)``, and a :class:`DirectLauncher` that has launched it
    before skips building the per-argument key. ``key=None`` numbers nothing."""
    __slots__ = ("key", "token", "first")
    _ids: dict = {}  # operator key -> a number never handed out again (hashed once per call, not per launch)
    _next = itertools.count()

    def __init__(self, key):
        self.first = False  # the first call with this key (its kernels may still need compiling)
        if key is not None:
            ids = NumberedLaunches._ids
            number = ids.get(key)
            if number is None:
                if len(ids) >= DirectLauncher.MAX_KEYS:
                    ids.clear()
                number = ids[key] = next(NumberedLaunches._next)
                self.first = True
            key = number
        self.key = key

    def __enter__(self):
        self.token = None if self.key is None else _SITES.set([self.key, 0])
        return self

    def __exit__(self, *exc):
        if self.token is not None:
            _SITES.reset(self.token)


def current_operator() -> Optional[int]:
    """The number of the operator key that the launches in progress are numbered under (None: not numbered)."""
    numbered = _SITES.get()
    return None if numbered is None else numbered[0]


class DirectLauncher:
    """``launcher[grid](*args, **kwargs)`` like a ``triton.jit`` function, launching compiled kernels directly
    once the JIT has compiled (or found) them for the same specialisation."""

    MAX_KEYS = 4096  # distinct argument keys kept per kernel (a training run sees a handful of shapes)

    def __init__(self, jit_fn):
        self.fn = jit_fn
        self.names = [p.name for p in jit_fn.params]
        self.params = frozenset(self.names)
        defaults = {name: p.default for name, p in jit_fn.signature.parameters.items() if p.default is not p.empty}
        self.defaults = [defaults.get(name) for name in self.names]
        self.cache = {}
        self.tails = {}  # positional arguments given -> (names, defaults) of the rest
        self.sites = {}  # (operator key, launch number, device) -> (compiled kernel, positions of the tensors)
        self.jit_launches = self.direct_launches = 0
        self.broken = False  # the compiled kernel refused a direct call: JIT launches from then on

    def __getitem__(self, grid):
        return lambda *args, **kwargs: self.launch(grid, args, kwargs)

    def launch(self, grid, args, kwargs):
        numbered = _SITES.get()
        if numbered is not None:  # counted first, whatever path this launch takes
            site = (numbered[0], numbered[1])
            numbered[1] += 1
        rt = knobs.runtime
        if self.broken or _active(rt.launch_enter_hook) or _active(rt.launch_exit_hook):
            return self.fn[grid](*args, **kwargs)
        device = driver.active.get_current_device()  # the device and stream calls of Triton's own launch
        tail = self.tails.get(len(args))
        if tail is None:
            n = len(args)
            tail = self.tails[n] = (self.names[n:], self.defaults[n:])
        values = [*args, *map(kwargs.get, *tail)]  # signature order, defaults filled in
        if numbered is not None:
            site = (site, device)
            known = self.sites.get(site)
            if known is not None:  # this launch of this operator call: its kernel and where its tensors are
                kernel, tensors = known
                for i in tensors:
                    values[i] = values[i].data_ptr()
                return self._run(kernel, grid, device, values, args, kwargs)
        Tensor = torch.Tensor
        ptrs = [v.data_ptr() if isinstance(v, Tensor) else v for v in values]
        key = (device, launch_key(values, ptrs, tuple([kv for kv in kwargs.items() if kv[0] not in self.params])))
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
        if numbered is not None:
            if len(self.sites) >= self.MAX_KEYS:
                self.sites.clear()
            self.sites[site] = (kernel, [i for i, v in enumerate(values) if isinstance(v, Tensor)])
        # Triton's C launcher takes an int as the address itself: no data_ptr() call and no cuPointerGetAttribute
        # per tensor (the key holds every tensor's dtype and device type)
        return self._run(kernel, grid, device, ptrs, args, kwargs)

    def _run(self, kernel, grid, device, values, args, kwargs):
        g = tuple(grid) + (1,) * (3 - len(grid))
        try:
            kernel.run(g[0], g[1], g[2], driver.active.get_current_stream(device), kernel.function,
                       kernel.packed_metadata, None, None, None, *values)
        except (TypeError, AttributeError) as e:  # the launcher parses its arguments before launching anything
            self.broken = True
            warnings.warn(f"nnunet_mamba: direct launches of {getattr(self.fn, '__name__', self.fn)} failed "
                          f"({type(e).__name__}: {e}); using Triton's JIT launches (set "
                          f"{options.ENV['direct_launch']}=0 to silence this)", RuntimeWarning, stacklevel=4)
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


# True while a compile-ahead pass runs (see .ahead): its launches only compile
_COMPILING_ONLY: contextvars.ContextVar[bool] = contextvars.ContextVar("nnunet_mamba_compiling_only", default=False)


class CompileOnly:
    """``[grid](*args, **kwargs)`` like a ``triton.jit`` function, but it only compiles (or finds) the kernel of that
    specialisation and launches nothing: Triton's ``run(..., warmup=True)``."""
    __slots__ = ("fn",)

    def __init__(self, jit_fn):
        self.fn = jit_fn

    def __getitem__(self, grid):
        return lambda *args, **kwargs: self.fn.run(*args, grid=grid, warmup=True, **kwargs)


@contextlib.contextmanager
def compiling_only():
    """Inside, :func:`launcher` hands out :class:`CompileOnly` launchers (in this thread and context only)."""
    token = _COMPILING_ONLY.set(True)
    try:
        yield
    finally:
        _COMPILING_ONLY.reset(token)


def launcher(jit_fn):
    """The JIT function itself, or its :class:`DirectLauncher` when direct launches are on (the default with the
    checked Triton releases; never in the interpreter); a :class:`CompileOnly` inside :func:`compiling_only`."""
    if _COMPILING_ONLY.get():
        return CompileOnly(jit_fn)
    if not direct_launch_enabled() or triton_interpreting():
        return jit_fn
    if id(jit_fn) not in _LAUNCHERS:
        _LAUNCHERS[id(jit_fn)] = (jit_fn, DirectLauncher(jit_fn))
    return _LAUNCHERS[id(jit_fn)][1]


def numbered(tensors, *statics) -> NumberedLaunches:
    """Numbers the launches of one operator call by everything they depend on: the (contiguous) tensors' shapes,
    dtypes, device types and 16-byte alignment, the other arguments (``statics``) and the options in force. The
    host-side decisions (:func:`memo`) and the direct launcher's kernel lookups are then made once per key."""
    return NumberedLaunches((tuple([None if t is None else (t.shape, t.dtype, t.is_cuda, t.data_ptr() % 16 == 0)
                                    for t in tensors]), statics, options.current()))


_MEMO: dict = {}


def memo(tag, fn, *args):
    """``fn(*args)`` once per operator key (see :func:`numbered`) and ``tag``: for host-side decisions that depend
    only on what that key holds; evaluated on every call outside a numbered call."""
    op = current_operator()
    if op is None:
        return fn(*args)
    key = (op, tag)
    value = _MEMO.get(key, _MEMO)
    if value is _MEMO:
        if len(_MEMO) >= 4096:
            _MEMO.clear()
        value = _MEMO[key] = fn(*args)
    return value
