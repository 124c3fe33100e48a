"""The direct launcher's specialisation key and launch path, with a stand-in for a ``triton.jit`` function
(the real one needs a GPU; scan_launch_overhead.py --direct compares both paths there)."""
import inspect
import types

import pytest
import torch

pytest.importorskip("triton")
from nnunet_mamba.kernels import launch  # noqa: E402


def kernel_fn(x, y, n, L, FLAG, BLOCK=4):  # the stand-in kernel's signature
    pass


class FakeJit:
    """Records JIT launches and the direct launches of the 'compiled kernel' it returns."""

    def __init__(self):
        self.signature = inspect.signature(kernel_fn)
        self.params = [types.SimpleNamespace(name=n, is_constexpr=n in ("FLAG", "BLOCK"), do_not_specialize=n == "L")
                       for n in self.signature.parameters]
        self.jit_calls, self.direct_calls = [], []
        self.kernel = types.SimpleNamespace(function="f", packed_metadata="m",
                                            run=lambda *a: self.direct_calls.append(a))

    def __getitem__(self, grid):
        def run(*args, **kwargs):
            self.jit_calls.append((grid, args, kwargs))
            return self.kernel
        return run


@pytest.fixture
def fake_cuda(monkeypatch):
    active = types.SimpleNamespace(get_current_device=lambda: 0, get_current_stream=lambda device: 7)
    monkeypatch.setattr(launch, "driver", types.SimpleNamespace(active=active))


def test_launch_key_separates_what_triton_specialises_on():
    def key(value, kw=False):
        return launch.launch_key((), {"x": value}) if kw else launch.launch_key((value,), {})

    t = torch.zeros(8)
    for kw in (False, True):
        assert key(t, kw) == key(torch.ones(8), kw)
        assert key(t, kw) == key(torch.nn.Parameter(torch.ones(8)), kw)  # subclasses: still by dtype
        assert key(t, kw) != key(t[1:], kw)  # 4-byte offset: unaligned
        assert key(t, kw) != key(t.bfloat16(), kw)
        assert key(16, kw) != key(32, kw)  # integers: the value (finer than Triton's 1 / %16 / width)
        assert key(True, kw) != key(False, kw)
        assert key(True, kw) != key(1, kw)  # equal in Python, but Triton types them i1 vs i32
        assert key(None, kw) != key(0, kw)
    assert launch.launch_key((), {"a": 1}) != launch.launch_key((), {"b": 1})  # keyword names count
    assert launch.launch_key((1, 2), {}) != launch.launch_key((2, 1), {})  # and positions


def test_direct_launcher_goes_through_the_jit_once_per_specialisation(fake_cuda):
    fn = FakeJit()
    d = launch.DirectLauncher(fn)
    x, y = torch.zeros(8), torch.zeros(8)
    d[(3, 2)](x, y, 5, 100, FLAG=True, num_warps=1)
    assert len(fn.jit_calls) == 1 and not fn.direct_calls
    d[(4,)](torch.ones(8), y, 5, 100, FLAG=True, num_warps=1)  # other tensors, same key: launched directly
    assert len(fn.jit_calls) == 1
    (call,) = fn.direct_calls
    assert call[:9] == (4, 1, 1, 7, "f", "m", None, None, None)  # grid padded to 3-D, stream, kernel, no hooks
    assert torch.equal(call[9], torch.ones(8))
    assert list(call[10:]) == [y, 5, 100, True, 4]  # every argument in signature order, defaults filled in
    for args, kwargs in (((x, y, 6, 100), dict(FLAG=True, num_warps=1)),  # an integer changed
                         ((x, y, 5, 100), dict(FLAG=False, num_warps=1)),  # a constexpr changed
                         ((x, y[1:], 5, 100), dict(FLAG=True, num_warps=1)),  # alignment changed
                         ((x, y.double(), 5, 100), dict(FLAG=True, num_warps=1)),  # dtype changed
                         ((x, y, 5, 100), dict(FLAG=True, num_warps=2))):  # a launch option changed
        d[(1,)](*args, **kwargs)
    assert len(fn.jit_calls) == 6 and len(fn.direct_calls) == 1


def test_active_launch_hooks_take_the_jit_path(fake_cuda, monkeypatch):
    from triton import knobs
    fn = FakeJit()
    d = launch.DirectLauncher(fn)
    x = torch.zeros(8)
    monkeypatch.setattr(knobs.runtime, "launch_enter_hook", lambda *a: None)  # e.g. a profiler
    for _ in range(2):
        d[(1,)](x, x, 5, 100, FLAG=True)
    assert len(fn.jit_calls) == 2 and not fn.direct_calls


def test_launcher_default_follows_the_checked_triton_releases(monkeypatch):
    fn = FakeJit()
    monkeypatch.setattr("nnunet_mamba.kernels.dispatch.triton_interpreting", lambda: False)
    monkeypatch.delenv("NNUNET_MAMBA_SCAN_DIRECT_LAUNCH", raising=False)
    assert launch.checked_release("3.6.0") and launch.checked_release("3.6.1")
    for version in ("3.7.1", "3.60.0", "4.0.0"):
        assert not launch.checked_release(version)
    monkeypatch.setattr(launch, "TRITON_CHECKED", True)
    assert isinstance(launch.launcher(fn), launch.DirectLauncher) and launch.launcher(fn) is launch.launcher(fn)
    monkeypatch.setattr(launch, "TRITON_CHECKED", False)
    assert launch.launcher(fn) is fn
    monkeypatch.setenv("NNUNET_MAMBA_SCAN_DIRECT_LAUNCH", "1")  # forced on with an unchecked release
    assert isinstance(launch.launcher(fn), launch.DirectLauncher)
    monkeypatch.setattr(launch, "TRITON_CHECKED", True)
    monkeypatch.setenv("NNUNET_MAMBA_SCAN_DIRECT_LAUNCH", "0")  # switched off with a checked one
    assert launch.launcher(fn) is fn
    monkeypatch.setenv("NNUNET_MAMBA_SCAN_DIRECT_LAUNCH", "1")
    monkeypatch.setattr("nnunet_mamba.kernels.dispatch.triton_interpreting", lambda: True)
    assert launch.launcher(fn) is fn


def test_a_refused_direct_call_falls_back_to_the_jit_for_good(fake_cuda):
    """Another Triton's compiled-kernel launcher with other arguments: one warning, then JIT launches only."""
    fn = FakeJit()

    def refuse(*args):
        raise TypeError("function takes exactly 12 arguments")

    fn.kernel.run = refuse
    d = launch.DirectLauncher(fn)
    x = torch.zeros(8)
    d[(1,)](x, x, 5, 100, FLAG=True)  # compiles through the JIT
    with pytest.warns(RuntimeWarning, match="JIT launches"):
        d[(1,)](x, x, 5, 100, FLAG=True)  # the direct call is refused: launched by the JIT instead
    assert d.broken and len(fn.jit_calls) == 2
    d[(1,)](x, x, 5, 100, FLAG=True)
    assert len(fn.jit_calls) == 3 and d.direct_launches == 0
