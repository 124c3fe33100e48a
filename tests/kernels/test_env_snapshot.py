"""The scan's switches are read from one snapshot per operator call."""
import os

from nnunet_mamba.kernels import env


def test_getenv_reads_the_environment_outside_a_snapshot(monkeypatch):
    monkeypatch.setenv("NNUNET_MAMBA_SCAN_TEST_SWITCH", "a")
    assert env.getenv("NNUNET_MAMBA_SCAN_TEST_SWITCH") == "a"
    monkeypatch.setenv("NNUNET_MAMBA_SCAN_TEST_SWITCH", "b")
    assert env.getenv("NNUNET_MAMBA_SCAN_TEST_SWITCH") == "b"
    monkeypatch.delenv("NNUNET_MAMBA_SCAN_TEST_SWITCH")
    assert env.getenv("NNUNET_MAMBA_SCAN_TEST_SWITCH", "default") == "default"


def test_a_call_sees_the_switches_as_they_were_when_it_started(monkeypatch):
    monkeypatch.setenv("NNUNET_MAMBA_SCAN_TEST_SWITCH", "before")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setenv("NNUNET_MAMBA_OTHER_TEST_VAR", "x")  # not a scan switch: not in the snapshot

    @env.snapshotted
    def inner():
        return env.getenv("NNUNET_MAMBA_SCAN_TEST_SWITCH")

    @env.snapshotted
    def outer():
        first = env.getenv("NNUNET_MAMBA_SCAN_TEST_SWITCH")
        os.environ["NNUNET_MAMBA_SCAN_TEST_SWITCH"] = "during"  # a change in the middle of a call
        return first, inner(), env.getenv("TRITON_INTERPRET"), env.getenv("NNUNET_MAMBA_OTHER_TEST_VAR", "absent")

    assert outer() == ("before", "before", "1", "absent")  # the nested call shares the outer snapshot
    assert env.getenv("NNUNET_MAMBA_SCAN_TEST_SWITCH") == "during"  # and the snapshot ends with the call
    assert inner() == "during"


def test_a_failing_call_leaves_no_snapshot_behind():
    @env.snapshotted
    def fails():
        raise RuntimeError("boom")

    try:
        fails()
    except RuntimeError:
        pass
    assert env._SNAPSHOT.get() is None
