"""The fused scan's per-operator-call memo of host-side decisions: keyed by everything they depend on."""
import pytest
import torch

pytest.importorskip("triton")
from nnunet_mamba.kernels import scan_options  # noqa: E402
from nnunet_mamba.kernels.triton.launch import current_operator, memo, numbered  # noqa: E402


def _number_of(*tensors, statics=("fwd",)):
    with numbered(tensors, *statics):
        return current_operator()


def test_operator_key_holds_shapes_dtypes_alignment_statics_and_options():
    x = torch.zeros(2, 8, 4)
    base = _number_of(x, None)
    assert base is not None and _number_of(torch.ones(2, 8, 4), None) == base  # same key: same number
    for other in (_number_of(torch.zeros(2, 8, 5), None),  # shape
                  _number_of(x.double(), None),  # dtype
                  _number_of(torch.zeros(65)[1:].view(2, 8, 4), None),  # 4-byte offset: unaligned
                  _number_of(x, x),  # an optional input present
                  _number_of(x, None, statics=("bwd",))):  # the other arguments
        assert other != base
    with scan_options(deterministic=not torch.are_deterministic_algorithms_enabled()):  # an option
        assert _number_of(x, None) not in (None, base)
    assert _number_of(x, None) == base


def test_memo_evaluates_once_per_operator_key():
    calls = []

    def decide(v):
        calls.append(v)
        return v * 2

    def op(x, v):
        with numbered((x,), "op"):
            return memo("decide", decide, v), memo("other", decide, v + 1)

    x = torch.zeros(3)
    assert op(x, 1) == (2, 4) and op(x, 1) == (2, 4) and calls == [1, 2]
    assert op(torch.zeros(4), 1) == (2, 4) and calls == [1, 2, 1, 2]  # another key
    assert memo("decide", decide, 5) == 10 and calls[-1] == 5  # outside an operator call: every time
