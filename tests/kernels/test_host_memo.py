"""The fused scan's per-operator-call memo of host-side decisions: keyed by everything they depend on."""
import pytest
import torch

pytest.importorskip("triton")
from nnunet_mamba.kernels import triton_scan as T  # noqa: E402
from nnunet_mamba.kernels.env import snapshotted  # noqa: E402
from nnunet_mamba.kernels.launch import current_operator  # noqa: E402


@snapshotted
def _number_of(*tensors, statics=("fwd",)):
    with T._numbered(tensors, *statics):
        return current_operator()


def test_operator_key_holds_shapes_dtypes_alignment_statics_and_switches(monkeypatch):
    monkeypatch.delenv("NNUNET_MAMBA_SCAN_SEQ", raising=False)
    x = torch.zeros(2, 8, 4)
    base = _number_of(x, None)
    assert base is not None and _number_of(torch.ones(2, 8, 4), None) == base  # same key: same number
    for other in (_number_of(torch.zeros(2, 8, 5), None),  # shape
                  _number_of(x.double(), None),  # dtype
                  _number_of(torch.zeros(65)[1:].view(2, 8, 4), None),  # 4-byte offset: unaligned
                  _number_of(x, x),  # an optional input present
                  _number_of(x, None, statics=("bwd",))):  # the other arguments
        assert other != base
    monkeypatch.setenv("NNUNET_MAMBA_SCAN_SEQ", "0")  # a switch
    assert _number_of(x, None) != base
    monkeypatch.setenv("NNUNET_MAMBA_SCAN_NUMBERED", "0")  # switched off
    assert _number_of(x, None) is None
    monkeypatch.delenv("NNUNET_MAMBA_SCAN_NUMBERED")
    monkeypatch.setattr(T, "_CONFIG_OVERRIDE", {"BLOCK_T": 16})  # a test's or benchmark's override, by contents
    with_override = _number_of(x, None)
    assert with_override not in (None, base)
    T._CONFIG_OVERRIDE["BLOCK_T"] = 32
    assert _number_of(x, None) != with_override


def test_memo_evaluates_once_per_operator_key(monkeypatch):
    calls = []

    def decide(v):
        calls.append(v)
        return v * 2

    @snapshotted
    def op(x, v):
        with T._numbered((x,), "op"):
            return T._memo("decide", decide, v), T._memo("other", decide, v + 1)

    x = torch.zeros(3)
    assert op(x, 1) == (2, 4) and op(x, 1) == (2, 4) and calls == [1, 2]
    assert op(torch.zeros(4), 1) == (2, 4) and calls == [1, 2, 1, 2]  # another key
    assert T._memo("decide", decide, 5) == 10 and calls[-1] == 5  # outside an operator call: every time
