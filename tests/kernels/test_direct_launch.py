"""The direct launcher's specialisation key and launch path, with a stand-in for a ``triton.jit`` function
(the real one needs a GPU; scan_launch_overhead.py --direct compares both paths there)."""
import inspect
import types

import pytest
import torch

pytest.importorskip("triton")
from nnunet_mamba.kernels import scan_options  # noqa: E402
from nnunet_mamba.kernels.triton import launch  # noqa: E402


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
    def key(*values):
        return launch.launch_key(values, [v.data_ptr() if isinstance(v, torch.Tensor) else v for v in values], ())

    t = torch.zeros(8)
    assert key(t) == key(torch.ones(8))
    assert key(t) == key(torch.nn.Parameter(torch.ones(8)))  # subclasses: still by dtype
    assert key(t) != key(t[1:])  # 4-byte offset: unaligned
    assert key(t) != key(t.bfloat16())
    assert key(t)[0][0] == (torch.float32, False, True)  # dtype, on the GPU, aligned
    assert key(16) != key(32)  # integers: the value (finer than Triton's 1 / %16 / width)
    assert key(True) != key(False)
    assert key(True) != key(1)  # equal in Python, but Triton types them i1 vs i32
    assert key(None) != key(0)
    assert key(1, 2) != key(2, 1)  # positions count
    assert launch.launch_key((), (), (("num_warps", 1),)) != launch.launch_key((), (), (("num_warps", 2),))


def test_direct_launcher_goes_through_the_jit_once_per_specialisation(fake_cuda):
    fn = FakeJit()
    d = launch.DirectLauncher(fn)
    x, y = torch.zeros(8), torch.zeros(8)
    d[(3, 2)](x, y, 5, 100, FLAG=True, num_warps=1)
    assert len(fn.jit_calls) == 1 and not fn.direct_calls
    ones = torch.ones(8)
    fn.last_ones_ptr = ones.data_ptr()
    d[(4,)](ones, y, 5, 100, FLAG=True, num_warps=1)  # other tensors, same key: launched directly
    assert len(fn.jit_calls) == 1
    (call,) = fn.direct_calls
    assert call[:9] == (4, 1, 1, 7, "f", "m", None, None, None)  # grid padded to 3-D, stream, kernel, no hooks
    assert call[9] == fn.last_ones_ptr  # tensors as their addresses
    assert list(call[10:]) == [y.data_ptr(), 5, 100, True, 4]  # every argument in signature order, defaults filled
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
    monkeypatch.setattr(launch, "triton_interpreting", lambda: False)
    assert launch.checked_release("3.6.0") and launch.checked_release("3.6.1")
    for version in ("3.7.1", "3.60.0", "4.0.0"):
        assert not launch.checked_release(version)
    monkeypatch.setattr(launch, "TRITON_CHECKED", True)
    assert isinstance(launch.launcher(fn), launch.DirectLauncher) and launch.launcher(fn) is launch.launcher(fn)
    monkeypatch.setattr(launch, "TRITON_CHECKED", False)
    assert launch.launcher(fn) is fn
    with scan_options(direct_launch=True):  # forced on with an unchecked release
        assert isinstance(launch.launcher(fn), launch.DirectLauncher)
    monkeypatch.setattr(launch, "TRITON_CHECKED", True)
    with scan_options(direct_launch=False):  # switched off with a checked one
        assert launch.launcher(fn) is fn
    monkeypatch.setattr(launch, "triton_interpreting", lambda: True)
    with scan_options(direct_launch=True):
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


def test_numbered_launches_skip_the_argument_key(fake_cuda, monkeypatch):
    """Inside NumberedLaunches the n-th launch of an operator key is served from its site once known: no per-argument
    key, the same compiled kernel, the tensors' addresses of this call; another key or no numbering builds the key."""
    fn = FakeJit()
    d = launch.DirectLauncher(fn)
    built = []
    real_key = launch.launch_key
    monkeypatch.setattr(launch, "launch_key", lambda *a: built.append(1) or real_key(*a))

    def op(key, x, flag):
        with launch.NumberedLaunches(key):
            d[(1,)](x, x, 5, 100, FLAG=flag)
            d[(2,)](x, x, 6, 100, FLAG=flag)  # a second launch of the same kernel, other arguments

    x = torch.zeros(8)
    op("a", x, True)  # JIT launches (compile) ...
    op("a", x, True)  # ... direct launches through the key, sites recorded
    assert len(fn.jit_calls) == 2 and len(built) == 4 and len(fn.direct_calls) == 2
    y = torch.ones(8)
    op("a", y, True)  # served by the sites
    assert len(built) == 4 and len(fn.direct_calls) == 4
    assert [c[0] for c in fn.direct_calls[2:]] == [1, 2] and [c[11] for c in fn.direct_calls[2:]] == [5, 6]
    assert fn.direct_calls[-1][9] == y.data_ptr()
    op("b", y, False)  # another operator key: keys built again (a new specialisation: JIT)
    op(None, y, True)  # not numbered
    assert len(built) == 8 and len(fn.jit_calls) == 4
    assert launch.current_operator() is None


def test_numbered_launches_count_every_launch(fake_cuda, monkeypatch):
    """A launch that takes the JIT path (an active hook) still counts, so the numbers of later launches stay put."""
    from triton import knobs
    fn = FakeJit()
    d = launch.DirectLauncher(fn)
    x = torch.zeros(8)
    for _ in range(3):
        with launch.NumberedLaunches("k"):
            d[(1,)](x, x, 5, 100, FLAG=True)
            d[(1,)](x, x, 7, 100, FLAG=True)
    monkeypatch.setattr(knobs.runtime, "launch_enter_hook", lambda *a: None)
    with launch.NumberedLaunches("k"):
        d[(1,)](x, x, 5, 100, FLAG=True)  # JIT (hook), yet number 0
        monkeypatch.setattr(knobs.runtime, "launch_enter_hook", None)
        d[(1,)](x, x, 7, 100, FLAG=True)  # number 1: its own site, integer 7
    assert fn.direct_calls[-1][11] == 7
