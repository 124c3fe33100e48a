"""``nnunet-mamba compare``: paired statistics against SciPy and hand counts, the resume logic, the report from
finished runs, and a real comparison of two trainers through the stock nnUNetv2_train on CPU."""
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from nnunet_mamba.cli.main import main
from nnunet_mamba.comparison.metrics import segmentation_observations
from nnunet_mamba.comparison.runs import Arm, Run, all_runs
from nnunet_mamba.comparison.stats import describe, paired_difference


def test_paired_difference_matches_scipy_and_drops_nan_pairs():
    rng = np.random.default_rng(1)
    a = rng.normal(0.85, 0.05, 40)
    b = a - 0.01 + rng.normal(0, 0.01, 40)
    a_nan, b_nan = np.append(a, np.nan), np.append(b, 0.5)
    d = paired_difference(a_nan, b_nan)
    diff = a - b
    half = stats.t.ppf(0.975, 39) * diff.std(ddof=1) / math.sqrt(40)
    assert d["n"] == 40 and d["mean"] == pytest.approx(diff.mean())
    assert (d["ci_low"], d["ci_high"]) == pytest.approx((diff.mean() - half, diff.mean() + half))
    assert d["p_ttest"] == pytest.approx(stats.ttest_rel(a, b).pvalue)
    assert d["p_wilcoxon"] == pytest.approx(stats.wilcoxon(diff).pvalue)
    assert d["ci_low"] > 0 and d["p_ttest"] < 1e-3  # a real 0.01 advantage is found
    same = paired_difference(a, a)
    assert same["mean"] == 0 and same["p_ttest"] == 1.0 and same["p_wilcoxon"] == 1.0
    assert paired_difference([0.5], [0.4])["ci_low"] is None  # one pair: no interval
    with pytest.raises(ValueError, match="equal lengths"):
        paired_difference([1, 2], [1])
    assert describe([1.0, 3.0, float("nan")]) == {"n": 2, "mean": 2.0, "std": pytest.approx(math.sqrt(2))}


def test_arms_runs_and_resume_states(tmp_path):
    assert Arm.parse("nnUNetTrainer@nnUNetResEncUNetMPlans") == Arm("nnUNetTrainer", "nnUNetResEncUNetMPlans")
    assert Arm.parse("MambaTrainer").label == "MambaTrainer"
    for bad in ("", "A@", "a b", "x/y"):
        with pytest.raises(ValueError):
            Arm.parse(bad)
    runs = all_runs([Arm("A"), Arm("B")], ["0", "1"], [0, 7])
    assert [(r.fold, r.seed, r.arm.trainer) for r in runs[:4]] == [("0", 0, "A"), ("0", 0, "B"), ("0", 7, "A"),
                                                                    ("0", 7, "B")]
    r = Run(Arm("A", "P"), "1", 7)
    folder = r.folder(tmp_path, "Dataset001_X", "2d")
    assert folder == tmp_path / "runs" / "seed_7" / "Dataset001_X" / "A__P__2d" / "fold_1"
    assert r.state(tmp_path, "Dataset001_X", "2d") == "new"
    assert "--c" not in r.command("train", "Dataset001_X", "2d", "cpu", "new")
    folder.mkdir(parents=True)
    (folder / "checkpoint_latest.pth").write_bytes(b"x")
    assert r.state(tmp_path, "Dataset001_X", "2d") == "resume"
    assert r.command("train", "Dataset001_X", "2d", "cpu", "resume")[-1] == "--c"
    (folder / "checkpoint_final.pth").write_bytes(b"x")
    assert r.state(tmp_path, "Dataset001_X", "2d") == "resume"  # final checkpoint, validation not yet run
    (folder / "validation").mkdir()
    (folder / "validation" / "summary.json").write_text("{}")
    assert r.state(tmp_path, "Dataset001_X", "2d") == "done"
    env = r.env(tmp_path, {"PATH": "p"})
    assert env["nnUNet_results"] == str(tmp_path / "runs" / "seed_7") and env["NNUNET_MAMBA_SEED"] == "7"


def _summary(dice_per_case: dict) -> dict:
    return {"metric_per_case": [{"reference_file": f"/gt/{case}.nii.gz", "prediction_file": f"/p/{case}.nii.gz",
                                 "metrics": {"1": {"Dice": d1}, "2": {"Dice": d2}}}
                                for case, (d1, d2) in dice_per_case.items()],
            "foreground_mean": {"Dice": 0.0}, "mean": {}}


def test_segmentation_observations_average_labels_and_skip_nan():
    obs = segmentation_observations(_summary({"c1": (0.8, 0.6), "c2": (float("nan"), 0.9)}), seed=3)
    assert obs[(3, "c1")]["Dice"] == pytest.approx(0.7) and obs[(3, "c1")]["Dice_2"] == 0.6
    assert obs[(3, "c2")]["Dice"] == pytest.approx(0.9)


def _fake_done_run(out: Path, trainer: str, fold: str, dice: dict, weights: bool = True) -> None:
    folder = Run(Arm(trainer), fold, 0).folder(out, "Dataset998_Fake", "3d_fullres")
    (folder / "validation").mkdir(parents=True)
    if weights:
        (folder / "checkpoint_final.pth").write_bytes(b"x")
    (folder / "validation" / "summary.json").write_text(json.dumps(_summary(dice)))


def test_report_from_finished_runs(tmp_path, monkeypatch, capsys):
    """Two arms, two folds of two cases each: the table's figures are the hand-computed ones."""
    monkeypatch.setenv("nnUNet_raw", str(tmp_path / "raw"))
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path / "pre"))
    (tmp_path / "raw" / "Dataset998_Fake").mkdir(parents=True)
    out = tmp_path / "cmp"
    _fake_done_run(out, "Base", "0", {"a": (0.80, 0.70), "b": (0.90, 0.80)})
    _fake_done_run(out, "Base", "1", {"c": (0.60, 0.60), "d": (0.70, 0.90)})
    (Run(Arm("Base"), "1", 0).folder(out, "Dataset998_Fake", "3d_fullres") / "trained_with.json").write_text(
        json.dumps({"device": "NVIDIA H100 80GB HBM3", "torch": "2.11.0+cu130"}))  # as compare records a run
    _fake_done_run(out, "New", "0", {"a": (0.85, 0.75), "b": (0.90, 0.90)})
    _fake_done_run(out, "New", "1", {"c": (0.70, 0.60), "d": (0.75, 0.95)}, weights=False)  # copied without .pth
    _fake_done_run(out, "New", "2", {"e": (0.0, 0.0)})  # a fold not asked for
    (Run(Arm("Base"), "2", 0).folder(out, "Dataset998_Fake", "3d_fullres")).mkdir(parents=True)  # unfinished
    rc = main(["compare", "-d", "998", "-c", "3d_fullres", "-tr", "Base", "New", "-f", "0", "1", "-o", str(out),
               "--report-only"])
    assert rc == 0
    report = json.loads((out / "comparison.json").read_text())["reports"][0]
    base, new = report["rows"]
    assert base["observations"]["mean"] == pytest.approx(np.mean([0.75, 0.85, 0.6, 0.8]))
    assert base["over_runs"]["std"] == pytest.approx(np.std([0.8, 0.7], ddof=1))
    diffs = [0.05, 0.05, 0.05, 0.05]
    assert new["vs_baseline"]["mean"] == pytest.approx(np.mean(diffs)) and new["vs_baseline"]["n"] == 4
    assert new["per_part"]["Dice_2"] == pytest.approx(np.mean([0.75, 0.9, 0.6, 0.95]))
    assert (out / "comparison.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (out / "comparison.md").read_text()
    assert "| New | 2 |" in md and "0.0500 [" in md and "(baseline)" in md
    assert "device: NVIDIA H100 80GB HBM3" in md and "torch: 2.11.0+cu130" in md  # the runs' card, not this one's
    assert "Base" in capsys.readouterr().out


def test_bad_arguments_are_named(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("nnUNet_raw", str(tmp_path / "raw"))
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path / "pre"))
    (tmp_path / "raw" / "Dataset998_Fake").mkdir(parents=True)
    assert main(["compare", "-d", "998", "-c", "2d", "-tr", "A", "--baseline", "B", "-o", str(tmp_path)]) == 2
    assert "--baseline 'B' is not one of ['A']" in capsys.readouterr().err
    assert main(["compare", "-d", "998", "-c", "2d", "-tr", "A", "-j", "0", "-o", str(tmp_path)]) == 2
    assert "--jobs must be 1 or more" in capsys.readouterr().err
    assert main(["compare", "-d", "998", "-c", "2d", "-tr", "A", "A", "-o", str(tmp_path)]) == 2
    assert "named twice" in capsys.readouterr().err
    assert main(["compare", "-d", "998", "-c", "2d", "-tr", "A@nnUNetResEncUNetMPlans", "-o", str(tmp_path)]) == 2
    assert "nnUNetResEncUNetMPlans.json: missing; run nnUNetv2_plan_and_preprocess" in capsys.readouterr().err


@pytest.mark.slow
def test_compare_two_trainers_through_stock_training_and_resume(tmp_path):
    """MambaTrainer_ci vs NoMambaTrainer_ci on fold 0 through the stock CLI; then folds 0 and 1: the finished fold
    is kept (not retrained), fold 1 trains, and the table pairs all validation cases."""
    from nnunet_mamba.dataset_conversion.msd import convert_msd
    from test_e2e_cli import cli, run
    from test_msd_conversion import small_task
    env = {k: v for k, v in os.environ.items() if k != "nnUNet_extTrainer"}
    env.update(nnUNet_raw=str(tmp_path / "raw"), nnUNet_preprocessed=str(tmp_path / "pre"),
               nnUNet_results=str(tmp_path / "unused"), nnUNet_def_n_proc="1", nnUNet_n_proc_DA="0",
               PYTHONUNBUFFERED="1")
    ds = convert_msd(small_task(tmp_path / "msd", n_train=6, n_test=1), 907, tmp_path / "raw", "HippoCompare")
    run([cli("nnUNetv2_plan_and_preprocess"), "-d", "907", "-c", "2d", "-np", "1", "-npfp", "1"],
        dict(env, nnUNet_n_proc_DA="1"))
    out = tmp_path / "cmp"
    base = [cli("nnunet-mamba"), "compare", "-d", "907", "-c", "2d", "-tr", "NoMambaTrainer_ci", "MambaTrainer_ci",
            "-o", str(out), "-device", "cpu"]
    run(base + ["-f", "0"], env)
    final = Run(Arm("NoMambaTrainer_ci"), "0", 0).folder(out, ds.name, "2d") / "checkpoint_final.pth"
    stamp = final.stat().st_mtime_ns
    log = run(base + ["-f", "0", "1", "-j", "2"], env)  # fold 1's two runs side by side
    assert final.stat().st_mtime_ns == stamp  # the finished run was kept
    assert json.loads((final.parent / "trained_with.json").read_text())["device"] == "CPU"
    assert "NoMambaTrainer_ci fold 0 seed 0: done" in log and "MambaTrainer_ci fold 1 seed 0: training" in log
    assert "[3/4] NoMambaTrainer_ci fold 1 seed 0: finished" in log and "[4/4] MambaTrainer_ci fold 1" in log
    report = json.loads((out / "comparison.json").read_text())["reports"][0]
    n_val = sum(len(json.loads((Run(Arm("MambaTrainer_ci"), f, 0).folder(out, ds.name, "2d") / "validation"
                                / "summary.json").read_text())["metric_per_case"]) for f in ("0", "1"))
    mamba = report["rows"][1]
    assert mamba["arm"] == "MambaTrainer_ci" and mamba["runs"] == 2 and mamba["vs_baseline"]["n"] == n_val
    assert 0 <= mamba["observations"]["mean"] <= 1
    assert (out / "comparison.png").is_file()


def _preprocessed(tmp_path: Path, cases: list[str]) -> Path:
    ds = tmp_path / "pre" / "Dataset997_Tiny"
    (ds / "gt_segmentations").mkdir(parents=True)
    (ds / "dataset.json").write_text(json.dumps({"file_ending": ".nii.gz"}))
    for c in cases:
        (ds / "gt_segmentations" / f"{c}.nii.gz").write_bytes(b"")
    (ds / "nnUNetPlans.json").write_text(json.dumps({"configurations": {"3d_fullres": {}}}))
    (tmp_path / "raw" / "Dataset997_Tiny").mkdir(parents=True)
    return ds


def test_fewer_than_five_cases_get_leave_one_out_folds(tmp_path, monkeypatch, capsys):
    """nnU-Net cannot split 3 cases into 5 folds: compare writes a leave-one-out split and trains its 3 folds."""
    from nnunet_mamba.comparison.splits import fold_count, leave_one_out
    assert leave_one_out(["a", "b", "c"])[1] == {"train": ["a", "c"], "val": ["b"]}
    monkeypatch.setenv("nnUNet_raw", str(tmp_path / "raw"))
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path / "pre"))
    ds = _preprocessed(tmp_path, ["p19", "p07", "p26"])
    out = tmp_path / "cmp"
    assert main(["compare", "-d", "997", "-c", "3d_fullres", "-tr", "A", "B", "-o", str(out), "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "folds 0 1 2 of 3: leave-one-out over 3 cases" in printed and "[6/6]" in printed and "fold 3" not in printed
    splits = json.loads((ds / "splits_final.json").read_text())
    assert [s["val"] for s in splits] == [["p07"], ["p19"], ["p26"]]
    assert fold_count(ds)[0] == 3  # the written split is reused, not rewritten
    assert main(["compare", "-d", "997", "-c", "3d_fullres", "-tr", "A", "-f", "0", "4", "-o", str(out)]) == 2
    assert "fold(s) 4 beyond the dataset's 3" in capsys.readouterr().err


def test_five_cases_keep_nnunets_split_and_one_case_is_refused(tmp_path, monkeypatch, capsys):
    from nnunet_mamba.comparison.splits import fold_count
    ds = _preprocessed(tmp_path, [f"c{i}" for i in range(5)])
    assert fold_count(ds) == (5, "nnU-Net's 5-fold split") and not (ds / "splits_final.json").exists()
    for f in list((ds / "gt_segmentations").iterdir())[1:]:
        f.unlink()
    with pytest.raises(ValueError, match="1 training case"):
        fold_count(ds)
    assert not (ds / "splits_final.json").exists()


def _restoration_summary(psnr: dict) -> dict:
    """Our restoration trainers' validation summary: per case the degraded input's and the restored PSNR / SSIM."""
    return {"trainer": "T", "mean": {}, "metric_per_case": [
        {"case": c, "reference": "raw", "degraded": {"PSNR": 20.0, "SSIM": 0.5},
         "restored": {"PSNR": p, "SSIM": None if p is None else p / 100}} for c, p in psnr.items()]}


def test_restoration_runs_pair_per_case_psnr_and_ssim(tmp_path, monkeypatch):
    """Restorers: PSNR and SSIM per validation case, paired over seeds and cases; sd over runs of each run's mean."""
    monkeypatch.setenv("nnUNet_raw", str(tmp_path / "raw"))
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path / "pre"))
    (tmp_path / "raw" / "Dataset998_Fake").mkdir(parents=True)
    out = tmp_path / "cmp"
    psnr = {("Base", 0): {"a": 30.0, "b": 32.0}, ("Base", 1): {"a": 31.0, "b": 33.0},
            ("New", 0): {"a": 30.5, "b": 32.5}, ("New", 1): {"a": 31.0, "b": 34.0}}
    for (arm, seed), values in psnr.items():
        folder = Run(Arm(arm), "0", seed).folder(out, "Dataset998_Fake", "3d_fullres")
        (folder / "validation").mkdir(parents=True)
        (folder / "validation" / "summary.json").write_text(json.dumps(_restoration_summary(values)))
    rc = main(["compare", "-d", "998", "-c", "3d_fullres", "-tr", "Base", "New", "-f", "0", "--seeds", "0", "1",
               "-o", str(out), "--report-only"])
    assert rc == 0
    reports = json.loads((out / "comparison.json").read_text())["reports"]
    assert [r["metric"] for r in reports] == ["PSNR", "SSIM"]
    base, new = reports[0]["rows"]
    assert base["runs"] == 2 and base["over_runs"]["std"] == pytest.approx(np.std([31.0, 32.0], ddof=1))
    assert new["vs_baseline"]["n"] == 4 and new["vs_baseline"]["mean"] == pytest.approx(np.mean([0.5, 0.5, 0, 1]))
    assert new["per_part"]["PSNR_input"] == pytest.approx(20.0)
    ssim_new = reports[1]["rows"][1]
    assert ssim_new["runs"] == 2 and ssim_new["vs_baseline"]["mean"] == pytest.approx(np.mean([0.5, 0.5, 0, 1]) / 100)
