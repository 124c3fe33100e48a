"""The Mamba-1 blocks keep only their inputs and scan outputs for the backward and recompute the rest (as mamba-ssm's
fused ``mamba_inner_fn``): the gradients are those of the plain computation, and far fewer bytes are kept."""
from __future__ import annotations

import warnings

import pytest
import torch

from nnunet_mamba.layers.mamba import Mamba, TriOrientedMamba

BLOCKS = [(Mamba, ()), (TriOrientedMamba, ((5, 6, 7),))]


def _plain(block, h, args):
    x, z = block.in_proj(h).chunk(2, dim=-1)
    return block.out_proj(block.inner(x, z, *args))


def _grads(out, h, block):
    return torch.autograd.grad(out.square().sum(), [h] + list(block.parameters()))


@pytest.mark.parametrize("cls,args", BLOCKS)
def test_recomputation_gives_the_plain_gradients(cls, args):
    torch.manual_seed(0)
    block = cls(24).double()
    h = torch.randn(3, 210, 24, dtype=torch.float64).transpose(0, 1).contiguous().transpose(0, 1)  # non-contiguous
    h.requires_grad_(True)
    plain = _plain(block, h, args)
    kept = block(h, *args)
    assert torch.equal(plain, kept)
    for a, b in zip(_grads(kept, h, block), _grads(plain, h, block)):
        assert ((a - b).norm() / b.norm().clamp_min(1e-30)) < 1e-12


@pytest.mark.parametrize("cls,args", BLOCKS)
def test_a_block_called_twice_under_autocast_recomputes(cls, args):
    """One block applied twice in one autocast region (nnMamba shares one per stage): the second call finds its
    weights' casts in autocast's cache, the recomputation in the backward does not; the gradients still match."""
    torch.manual_seed(0)
    block = cls(24)
    h = torch.randn(2, 210, 24, requires_grad=True)
    grads = []
    for twice in (lambda x: _plain(block, _plain(block, x, args), args), lambda x: block(block(x, *args), *args)):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = twice(h)
        grads.append(_grads(out.float(), h, block))
    for a, b in zip(*grads):
        assert ((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-30)) < 2e-2


@pytest.mark.parametrize("cls,args", BLOCKS)
def test_recomputation_keeps_fewer_bytes(cls, args):
    """Bytes held for the backward: every tensor autograd saves (the checkpoint's region inputs among them) plus the
    scan outputs the selective checkpoint keeps itself (one per direction, the size of the block's inner width)."""
    torch.manual_seed(0)
    block = cls(24)
    h = torch.randn(2, 210, 24, requires_grad=True)

    def saved_bytes(fn) -> int:
        storages = {}

        def pack(t):
            storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            fn()
        return sum(storages.values())

    plain = saved_bytes(lambda: _plain(block, h, args))
    scans = len(cls.SUFFIXES) if cls is TriOrientedMamba else 1
    with warnings.catch_warnings():  # some torch versions warn that SAC's own saves bypass the hooks (counted below)
        warnings.simplefilter("ignore", FutureWarning)
        recomputed = saved_bytes(lambda: block(h, *args)) + scans * 2 * 210 * block.d_inner * 4
    assert recomputed < 0.6 * plain


@pytest.mark.parametrize("cls,args", BLOCKS)
def test_recomputation_traces_as_one_graph(cls, args):
    torch.manual_seed(0)
    block = cls(16)
    h = torch.randn(2, 210, 16, requires_grad=True)
    ref = _grads(block(h, *args), h, block)
    compiled = torch.compile(block, backend="aot_eager", fullgraph=True)
    for a, b in zip(_grads(compiled(h, *args), h, block), ref):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-7)
