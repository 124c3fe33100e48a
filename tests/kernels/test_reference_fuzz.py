"""Property-based: the reference scan equals the float64 loop oracle on random shapes, options and values."""
import torch
from hypothesis import given, settings, strategies as st

from nnunet_mamba.kernels import default_directions
from nnunet_mamba.kernels.reference import multidir_scan_bwd, multidir_scan_fwd

from oracle import multidir_loop


@st.composite
def problems(draw):
    ndim = draw(st.integers(1, 3))
    grid = tuple(draw(st.lists(st.integers(1, 5), min_size=ndim, max_size=ndim)))
    k = draw(st.integers(1, 2 * ndim))
    return dict(grid=grid, k=k, batch=draw(st.integers(1, 2)), dim=draw(st.integers(1, 4)), n=draw(st.integers(1, 3)),
                skip=draw(st.booleans()), bias=draw(st.booleans()), gate=draw(st.booleans()),
                softplus=draw(st.booleans()), dt_scale=draw(st.sampled_from([0.01, 1.0, 30.0])),
                seed=draw(st.integers(0, 2 ** 31 - 1)))


@settings(max_examples=30, deadline=None)
@given(problems())
def test_reference_equals_loop_oracle(p):
    g = torch.Generator().manual_seed(p["seed"])
    L = 1
    for s in p["grid"]:
        L *= s
    B, D, N, K = p["batch"], p["dim"], p["n"], p["k"]
    r = lambda *shape: torch.randn(*shape, generator=g, dtype=torch.float64)  # noqa: E731
    delta = r(B, L, K, D) * p["dt_scale"]
    if not p["softplus"]:
        delta = delta.abs()  # without softplus the time step must be positive
    args = [r(B, L, D), delta, -(torch.rand(K, D, N, generator=g, dtype=torch.float64) * 3 + 1e-3),
            r(B, L, K, N), r(B, L, K, N), r(K, D) if p["skip"] else None,
            0.3 * r(K, D) if p["bias"] and p["softplus"] else None, r(B, L, D) if p["gate"] else None]
    directions = default_directions(len(p["grid"]), K)
    leaves = [a.clone().requires_grad_() if a is not None else None for a in args]
    want = multidir_loop(*leaves, p["grid"], directions, p["softplus"])
    got = multidir_scan_fwd(*args, p["grid"], directions, p["softplus"])
    assert torch.allclose(got, want, rtol=1e-9, atol=1e-12)
    dout = torch.randn(want.shape, generator=g, dtype=torch.float64)
    present = [a for a in leaves if a is not None]
    expected = iter(torch.autograd.grad(want, present, dout, allow_unused=True))
    for leaf, grad in zip(leaves, multidir_scan_bwd(dout, *args, p["grid"], directions, p["softplus"])):
        if leaf is None:
            assert grad is None
        else:
            e = next(expected)
            e = torch.zeros_like(leaf) if e is None else e
            assert torch.allclose(grad, e, rtol=1e-8, atol=1e-10)
