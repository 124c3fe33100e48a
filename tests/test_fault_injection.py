"""Random damage to the files of a small real dataset (MSD Hippocampus cases): every command either gives the
same output as on the clean data or fails with one message naming the damaged file; it never writes a wrong
result and never touches its input.

``trial`` is shared with benchmarks/fault_injection.py, which runs many trials and records the counts quoted in
the README.
"""
from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from nnunet_mamba.cli.main import main
from test_msd_conversion import small_task

pytestmark = pytest.mark.faults


def tree_digest(folder: Path) -> dict[str, str]:
    """Relative path -> SHA-256 of every file below ``folder`` (dataset.json without its timestamp-free form)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def convert(task: Path, out_root: Path, capsys) -> tuple[int, str]:
    code = main(["convert", "msd", str(task), "-d", "920", "--name", "Fault", "-o", str(out_root)])
    return code, capsys.readouterr().err


def trial(clean_task: Path, clean_output: dict, work: Path, rng: np.random.Generator, capsys) -> str:
    """Damage one random file of a copy of ``clean_task`` (1-8 random bytes changed, or cut short), convert it,
    and classify the outcome: "same" (output identical to the clean run), "clear" (exit 2, one message naming
    the damaged file, nothing written), or a failure string."""
    task = work / "task"
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(clean_task, task)
    files = sorted(p for p in task.rglob("*") if p.is_file())
    victim = files[int(rng.integers(len(files)))]
    data = bytearray(victim.read_bytes())
    if rng.random() < 0.25:
        data = data[: int(rng.integers(0, len(data)))]
    else:
        for _ in range(int(rng.integers(1, 9))):
            i = int(rng.integers(len(data)))
            data[i] = (data[i] + int(rng.integers(1, 256))) % 256
    victim.write_bytes(bytes(data))
    before = tree_digest(task)
    code, err = convert(task, work / "raw", capsys)
    if tree_digest(task) != before:
        return f"input changed: {victim.name}"
    out = work / "raw" / "Dataset920_Fault"
    if code == 0:
        got = tree_digest(out)
        if got == clean_output:
            return "same"
        if victim.name == "dataset.json" and {k: v for k, v in got.items() if k != "dataset.json"} == \
                {k: v for k, v in clean_output.items() if k != "dataset.json"}:
            return "same"  # the same images; the metadata text (a name, a description) carried over as given
        return f"silent wrong result from damaged {victim.name}"
    if out.exists():
        return f"exit {code} but {out} was written"
    if code == 2 and victim.name in err and "Traceback" not in err:
        return "clear"
    return f"unclear failure for {victim.name}: exit {code}: {err[-300:]}"


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    root = tmp_path_factory.mktemp("fault_clean")
    task = small_task(root, n_train=2, n_test=1)
    from nnunet_mamba.dataset_conversion.msd import convert_msd
    out = convert_msd(task, 920, root / "raw", "Fault")
    return task, tree_digest(out)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2 ** 32 - 1))
def test_random_damage_is_harmless_or_named(clean, tmp_path, capsys, seed):
    task, clean_output = clean
    outcome = trial(task, clean_output, tmp_path / f"t{seed}", np.random.default_rng(seed), capsys)
    assert outcome in ("same", "clear"), outcome
