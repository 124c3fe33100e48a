"""Random damage to the files of a small dataset (real MSD Hippocampus cases; synthetic BraTS cases and
predictions): every converter and ``submit brats`` either gives the same output as on the clean data or fails
with one message naming the damaged file; it never writes a wrong result and never touches its input.

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


COMMANDS = {  # command -> arguments on the task folder (MSD layout: imagesTr, labelsTr, imagesTs, dataset.json)
    "msd": lambda task, out: ["convert", "msd", str(task), "-d", "920", "--name", "Fault", "-o", str(out)],
    "brats": lambda task, out: ["convert", "brats", str(task), "-d", "920", "--name", "Fault", "-o", str(out)],
    "submit": lambda task, out: ["submit", "brats", "-i", str(task / "pred"), "--images", str(task / "ds" / "imagesTr"),
                                 "-d", str(task / "ds" / "dataset.json"), "-o", str(out / "Dataset920_Fault")],
    "folder": lambda task, out: ["convert", "folder", "--images", str(task / "imagesTr"), "--labels",
                                 str(task / "labelsTr"), "--test-images", str(task / "imagesTs"), "-d", "920",
                                 "--name", "Fault", "--channels", "MRI", "--label-names", "background=0",
                                 "Anterior=1", "Posterior=2", "-o", str(out)],
}


def convert(command: str, task: Path, out_root: Path, capsys) -> tuple[int, str]:
    code = main(COMMANDS[command](task, out_root))
    return code, capsys.readouterr().err


def damage(path: Path, rng: np.random.Generator) -> None:
    """Cut ``path`` short (one time in four) or change 1-8 of its bytes, at random."""
    data = bytearray(path.read_bytes())
    if rng.random() < 0.25:
        data = data[: int(rng.integers(0, len(data)))]
    else:
        for _ in range(int(rng.integers(1, 9))):
            i = int(rng.integers(len(data)))
            data[i] = (data[i] + int(rng.integers(1, 256))) % 256
    path.write_bytes(bytes(data))


def trial(clean_task: Path, clean_output: dict, work: Path, rng: np.random.Generator, capsys,
          command: str = "msd") -> str:
    """Damage one random file of a copy of ``clean_task`` (1-8 random bytes changed, or cut short), convert it,
    and classify the outcome: "same" (output identical to the clean run), "clear" (exit 2, one message naming
    the damaged file, nothing written), or a failure string."""
    task = work / "task"
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(clean_task, task)
    files = sorted(p for p in task.rglob("*") if p.is_file() and (command == "msd" or p.name != "dataset.json"))
    victim = files[int(rng.integers(len(files)))]
    damage(victim, rng)
    before = tree_digest(task)
    code, err = convert(command, task, work / "raw", capsys)
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


def clean_run(root: Path, command: str, capsys) -> tuple[Path, dict]:
    if command == "submit":  # a converted BraTS dataset and predictions for it
        import SimpleITK as sitk
        from test_brats import make_case
        from nnunet_mamba.dataset_conversion.brats import convert_brats
        src = root / "src"
        rng = np.random.default_rng(0)
        for cid in ("BraTS2021_00000", "BraTS2021_00002"):
            make_case(src, cid, "2021", rng)
        task = root / "task"
        ds = convert_brats(src, 921, task, "Src")
        ds.rename(task / "ds")
        (task / "pred").mkdir()
        for image in sorted((task / "ds" / "imagesTr").glob("*_0000.nii.gz")):
            ref = sitk.ReadImage(str(image))
            pred = sitk.GetImageFromArray(rng.integers(0, 4, sitk.GetArrayViewFromImage(ref).shape).astype(np.uint8))
            pred.CopyInformation(ref)
            sitk.WriteImage(pred, str(task / "pred" / (image.name[: -len("_0000.nii.gz")] + ".nii.gz")), True)
        for sub in ("labelsTr", "imagesTs"):  # not read by submit: damage there would say nothing
            shutil.rmtree(task / "ds" / sub, ignore_errors=True)
        code, err = convert(command, task, root / "raw", capsys)
        assert code == 0, err
        return task, tree_digest(root / "raw" / "Dataset920_Fault")
    if command == "brats":  # BraTS 2021 layout, synthetic cases (no BraTS data is shipped)
        from test_brats import make_case
        task = root / "BraTS2021_Training"
        rng = np.random.default_rng(0)
        for cid in ("BraTS2021_00000", "BraTS2021_00002"):
            make_case(task, cid, "2021", rng)
        code, err = convert(command, task, root / "raw", capsys)
        assert code == 0, err
        return task, tree_digest(root / "raw" / "Dataset920_Fault")
    task = small_task(root, n_train=2, n_test=1)
    if command == "folder":  # nnU-Net's channel naming, which convert folder reads
        for image in [*(task / "imagesTr").iterdir(), *(task / "imagesTs").iterdir()]:
            image.rename(image.with_name(image.name.replace(".nii.gz", "_0000.nii.gz")))
    code, err = convert(command, task, root / "raw", capsys)
    assert code == 0, err
    return task, tree_digest(root / "raw" / "Dataset920_Fault")


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_random_damage_is_harmless_or_named(tmp_path, capsys, command):
    task, clean_output = clean_run(tmp_path / "clean", command, capsys)

    @settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(seed=st.integers(0, 2 ** 32 - 1))
    def check(seed):
        outcome = trial(task, clean_output, tmp_path / "work", np.random.default_rng(seed), capsys, command)
        assert outcome in ("same", "clear"), outcome
    check()
