"""Compiling the scan kernels ahead (``kernels/triton/ahead.py``): the first call of a scan problem compiles every
kernel its host code launches on a thread pool, before launching any.

Without a GPU, Triton's JIT is pointed at a stand-in driver whose target is sm_90: the compile-ahead pass then
runs the real host code, Triton's real specialisation and its real compiler (machine code for H100 / H200), and
launches nothing, so it runs here as it runs on a GPU up to the launch.
"""
from __future__ import annotations

import types
import warnings

import pytest
import torch

pytest.importorskip("triton")
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.runtime import driver  # noqa: E402

import nnunet_mamba.kernels.triton as kt  # noqa: E402
from nnunet_mamba.kernels.directions import default_directions  # noqa: E402
from nnunet_mamba.kernels.triton import ahead, chunked, launch, param_grads, sequential  # noqa: E402
from nnunet_mamba.kernels.triton.plan import carries_shape, plan  # noqa: E402

pytestmark = pytest.mark.skipif(not ahead.available(), reason="this Triton has no asynchronous compile mode")


@pytest.fixture
def hopper_target(monkeypatch):
    """Triton's JIT compiles for sm_90 as on an H100; any launch would fail (there is no device)."""
    fake = types.SimpleNamespace(get_current_device=lambda: 0, get_current_stream=lambda device: 0,
                                 get_current_target=lambda: GPUTarget("cuda", 90, 32))
    monkeypatch.setattr(driver, "_active", fake)


@pytest.fixture
def compile_only_calls(monkeypatch):
    """Every compile-only launch, as (kernel name, constexpr flags)."""
    calls = []
    run = launch.CompileOnly.__getitem__

    def recording(self, grid):
        go = run(self, grid)

        def call(*args, **kwargs):
            calls.append(getattr(self.fn, "__name__", str(self.fn)))
            return go(*args, **kwargs)
        return call
    monkeypatch.setattr(launch.CompileOnly, "__getitem__", recording)
    return calls


def problem(Bsz, grid, D, K, N=16, dtype=torch.bfloat16, seed=0):
    g = torch.Generator().manual_seed(seed)
    L = 1
    for s in grid:
        L *= s
    r = lambda *shape, dt=dtype: torch.randn(*shape, generator=g).to(dt)  # noqa: E731
    return dict(u=r(Bsz, L, D), delta=r(Bsz, L, K, D), A=-torch.rand(K, D, N, generator=g), Bm=r(Bsz, L, K, N),
                Cm=r(Bsz, L, K, N), Dskip=r(K, D, dt=torch.float32), delta_bias=r(K, D, dt=torch.float32),
                z=r(Bsz, L, D), grid=grid, directions=default_directions(len(grid), K), delta_softplus=True)


def compiled_kernels(jit_fn) -> list:
    """The kernels in ``jit_fn``'s cache for device 0 (finished compiles), machine code checked."""
    cache = jit_fn.device_caches[0][0] if 0 in jit_fn.device_caches else {}
    kernels = [k.result() if hasattr(k, "result") else k for k in cache.values()]
    assert all(k.asm.get("cubin") for k in kernels), "a kernel without machine code"
    return kernels


@pytest.mark.parametrize("grid,Bsz,D,K", [((5, 6, 7), 2, 64, 3), ((3, 4, 5), 1, 24, 2)],
                         ids=["sequential", "chunked"])
def test_a_first_call_compiles_all_its_kernels_for_sm90_and_launches_none(hopper_target, compile_only_calls,
                                                                          grid, Bsz, D, K):
    x = problem(Bsz, grid, D, K)
    p = plan(Bsz, x["u"].shape[1], D, K, 16, torch.bfloat16, True, False, False)
    assert p.sequential == (grid == (5, 6, 7))  # both kernel families are covered
    fwd = lambda: kt.multidir_scan_fwd(**x, return_carries=True)  # noqa: E731
    assert ahead.compile_ahead(fwd)
    fwd_kernels = set(compile_only_calls)
    shape = carries_shape(Bsz, x["u"].shape[1], D, K, 16)
    carries = torch.zeros(shape) if shape != (0,) else None
    compile_only_calls.clear()
    assert ahead.compile_ahead(lambda: kt.multidir_scan_bwd(torch.randn_like(x["u"]), **x, carries=carries))
    bwd_kernels = set(compile_only_calls)
    if p.sequential:
        assert fwd_kernels == {"seq_summary", "_carry_kernel", "seq_fwd"}
        assert bwd_kernels == {"seq_summary", "_carry_kernel", "seq_bwd", "_param_grads_kernel"}
        ks = sequential.kernels(16, sequential.SUB_CHUNK)
        jit_fns = [ks["summary"], ks["fwd"], ks["bwd"], sequential._carry_kernel]
    else:
        assert fwd_kernels == {"_fwd_kernel"}
        assert bwd_kernels == {"_bwd_kernel", "_param_grads_kernel"}
        jit_fns = [chunked._fwd_kernel, chunked._bwd_kernel]
    for fn in jit_fns + [param_grads._param_grads_kernel]:
        assert compiled_kernels(fn), f"nothing compiled for {fn.__name__}"


def test_only_the_first_call_of_a_problem_runs_ahead(monkeypatch):
    """The host code runs ahead once per operator key; the real call always runs."""
    ahead_runs, real_runs = [], []

    def fake_forward(u, *args):
        real_runs.append(launch._COMPILING_ONLY.get())
        return torch.empty_like(u), None

    monkeypatch.setattr(launch.NumberedLaunches, "_ids", {})
    monkeypatch.setattr(sequential, "forward", fake_forward)
    monkeypatch.setattr(kt, "compile_ahead", lambda run: (ahead_runs.append(1), run()))
    x = problem(2, (5, 6, 7), 64, 3)
    for _ in range(3):
        kt.multidir_scan_fwd(**x)
    assert len(ahead_runs) == 1 and len(real_runs) == 4
    kt.multidir_scan_fwd(**problem(2, (5, 6, 9), 64, 3))  # another problem: its own first call
    assert len(ahead_runs) == 2 and len(real_runs) == 6


def test_nothing_runs_ahead_inside_another_asynchronous_compile():
    """Inductor compiles its own kernels in Triton's asynchronous mode; a scan call inside it compiles as usual."""
    ran = []
    with ahead.AsyncCompileMode(ahead.executor()):
        assert not ahead.available()
        assert not ahead.compile_ahead(lambda: ran.append(1))
    assert ran == [] and ahead.available()


def test_a_failing_pass_warns_once_and_leaves_the_compiles_to_the_real_call(monkeypatch):
    monkeypatch.setattr(ahead, "_warned", False)

    def broken():
        assert launch._COMPILING_ONLY.get()
        raise RuntimeError("no such kernel")
    with pytest.warns(RuntimeWarning, match="compile one by one"):
        assert not ahead.compile_ahead(broken)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not ahead.compile_ahead(broken)
    assert not launch._COMPILING_ONLY.get()


def test_an_invalid_input_raises_its_own_error_without_a_warning(monkeypatch):
    """The call's input check fails in the pass ahead just as in the real call: its ValueError surfaces, not a
    warning about compiling, and the warning stays available for a real compile failure."""
    monkeypatch.setattr(ahead, "_warned", False)

    def invalid():
        raise ValueError("carries of shape (1,) do not belong to this problem")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match="carries of shape"):
            ahead.compile_ahead(invalid)
    assert not launch._COMPILING_ONLY.get() and not ahead._warned


def test_one_forward_compiles_the_kernels_of_a_whole_training_step(hopper_target, compile_only_calls, monkeypatch):
    """``compile_training_step``: the scan calls of one (no-grad) forward compile their forward's and backward's
    kernels in one batch and hand the network zeros; nothing is launched."""
    import nnunet_mamba.kernels as kernels
    from nnunet_mamba.layers import Mamba
    monkeypatch.setattr(kernels, "resolve_backend", lambda device, requested=None: "triton")  # CPU tensors
    torch.manual_seed(0)
    layer = Mamba(40)  # float32 and 40 channels: specialisations no other test compiles
    x = torch.randn(2, 150, 40)
    seq_bwd = sequential.kernels(16, sequential.SUB_CHUNK)["bwd"]
    before = len(compiled_kernels(seq_bwd))
    outputs = []
    with torch.no_grad():
        compiled = kernels.compile_training_step(lambda: outputs.append(layer(x)))
        zero_scan = layer.out_proj(torch.zeros(2, 150, layer.out_proj.in_features))
    assert compiled is not None and compiled >= 5
    assert {"seq_summary", "_carry_kernel", "seq_fwd", "seq_bwd", "_param_grads_kernel"} <= set(compile_only_calls)
    assert len(compiled_kernels(seq_bwd)) == before + 1  # the backward's kernel, without any backward
    torch.testing.assert_close(outputs[0], zero_scan)  # the scan handed the layer zeros: no kernel ran
    assert not ahead.compiling_step() and not launch._COMPILING_ONLY.get()
