"""``nnunet-mamba plan``: nnU-Net's ResEnc M planning with a memory estimate that includes Mamba layers.

Datasets are synthetic fingerprints (real-world median shapes of MSD Hippocampus and BraTS, written
next to two tiny image files, which is all nnU-Net's planner reads), planned in a subprocess because
nnunetv2 reads its paths from the environment at import time.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

# name: (id, channels, labels, median shape after cropping, number of cases in the fingerprint)
DATASETS = {
    "hippo": (991, {"0": "MRI"}, {"background": 0, "anterior": 1, "posterior": 2}, (35, 51, 35), 260),
    "brats": (992, {"0": "t1n", "1": "t1c", "2": "t2w", "3": "t2f"},
              {"background": 0, "whole_tumor": [1, 2, 3], "tumor_core": [2, 3], "enhancing_tumor": [3]},
              (139, 170, 138), 1251),
}
BYTES_PER_ESTIMATE_UNIT = 4.9  # measured 4.5-5.0 under bf16 (benchmarks/NETWORK_NOTES.md)


def make_dataset(raw: Path, pre: Path, key: str) -> None:
    did, channels, labels, shape, n_cases = DATASETS[key]
    name = f"Dataset{did}_{key}"
    (raw / name / "imagesTr").mkdir(parents=True)
    (raw / name / "labelsTr").mkdir(parents=True)
    for case in ("case_000", "case_001"):
        for c in channels:
            sitk.WriteImage(sitk.GetImageFromArray(np.zeros((4, 4, 4), np.float32)),
                            str(raw / name / "imagesTr" / f"{case}_{int(c):04d}.nii.gz"))
        sitk.WriteImage(sitk.GetImageFromArray(np.zeros((4, 4, 4), np.uint8)),
                        str(raw / name / "labelsTr" / f"{case}.nii.gz"))
    ds = {"channel_names": channels, "labels": labels, "numTraining": n_cases, "file_ending": ".nii.gz"}
    if key == "brats":
        ds["regions_class_order"] = [1, 2, 3]
    (raw / name / "dataset.json").write_text(json.dumps(ds))
    props = {"max": 1000.0, "mean": 100.0, "median": 90.0, "min": 0.0, "percentile_00_5": 1.0,
             "percentile_99_5": 900.0, "std": 50.0}
    fingerprint = {"foreground_intensity_properties_per_channel": {c: props for c in channels},
                   "median_relative_size_after_cropping": 1.0,
                   "shapes_after_crop": [[s + i % 3 - 1 for s in shape] for i in range(n_cases)],
                   "spacings": [[1.0, 1.0, 1.0]] * n_cases}
    (pre / name).mkdir(parents=True)
    (pre / name / "dataset_fingerprint.json").write_text(json.dumps(fingerprint))


WORKER = textwrap.dedent(r'''
    import json, sys
    import torch
    from nnunetv2.experiment_planning.experiment_planners.residual_unets.residual_encoder_unet_planners import (
        nnUNetPlannerResEncM)
    from nnunet_mamba.planning import MambaPlanner
    from nnunet_mamba.networks import build_network, resolve_arch_kwargs
    out = {}
    for did, key, network, gb in json.loads(sys.argv[1]):
        if network == "nnUNetPlannerResEncM":
            plans = nnUNetPlannerResEncM(did).plan_experiment()
        else:
            plans = MambaPlanner(did, gb, network=network).plan_experiment()
        c = plans["configurations"]["3d_fullres"]
        arch = c["architecture"]
        kw = resolve_arch_kwargs(arch["arch_kwargs"], arch["_kw_requires_import"])
        n_in = len(plans["foreground_intensity_properties_per_channel"])
        with torch.device("meta"):
            net = build_network(network if network != "nnUNetPlannerResEncM" else "nomamba", kw, n_in, 3, True,
                                patch_size=c["patch_size"])
        est = int(net.compute_conv_feature_map_size(c["patch_size"]))
        out[f"{key}/{network}/{gb}"] = dict(patch=c["patch_size"], batch=c["batch_size"], estimate=est,
                                            record=plans.get("nnunet_mamba"), plans_name=plans["plans_name"])
    print("RESULT" + json.dumps(out))
''')


@pytest.fixture(scope="module")
def planned(tmp_path_factory):
    root = tmp_path_factory.mktemp("plan")
    raw, pre = root / "raw", root / "pre"
    for key in DATASETS:
        make_dataset(raw, pre, key)
    env = dict(os.environ, nnUNet_raw=str(raw), nnUNet_preprocessed=str(pre), nnUNet_results=str(root / "res"))
    jobs = [(991, "hippo", n, 8) for n in ("nnUNetPlannerResEncM", "nomamba", "mamba_resenc", "umamba_enc")]
    jobs += [(992, "brats", n, gb) for n in ("mamba_resenc", "umamba_enc", "segmamba") for gb in (8, 40)]
    proc = subprocess.run([sys.executable, "-c", WORKER, json.dumps(jobs)], capture_output=True, text=True, env=env,
                          timeout=600)
    if proc.returncode != 0:
        pytest.fail(proc.stdout[-2000:] + proc.stderr[-4000:])
    result = json.loads([ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")][-1][6:])
    return result, env, pre


def test_without_mixers_the_plan_is_nnunets_resenc_m(planned):
    res = planned[0]
    assert res["hippo/nomamba/8"]["patch"] == res["hippo/nnUNetPlannerResEncM/8"]["patch"]
    assert res["hippo/nomamba/8"]["batch"] == res["hippo/nnUNetPlannerResEncM/8"]["batch"]


def test_mixers_cost_memory_and_get_less_batch(planned):
    res = planned[0]
    nomamba, mamba, umamba = (res[f"hippo/{n}/8"] for n in ("nomamba", "mamba_resenc", "umamba_enc"))
    assert mamba["estimate"] > nomamba["estimate"]
    assert umamba["estimate"] > 2 * mamba["estimate"]  # a mixer after every stage, at full resolution too
    assert umamba["batch"] * np.prod(umamba["patch"]) < mamba["batch"] * np.prod(mamba["patch"]) \
        <= nomamba["batch"] * np.prod(nomamba["patch"])


@pytest.mark.parametrize("network", ["mamba_resenc", "umamba_enc", "segmamba"])
def test_estimated_memory_within_target_and_grows_with_it(planned, network):
    res = planned[0]
    small, large = res[f"brats/{network}/8"], res[f"brats/{network}/40"]
    for gb, p in ((8, small), (40, large)):
        assert p["batch"] >= 2
        assert p["batch"] * p["estimate"] * BYTES_PER_ESTIMATE_UNIT <= gb * 1e9, (network, gb, p)
        assert p["record"] == {"network": network, "network_options": {}, "gpu_memory_target_in_gb": gb,
                               "trainer": {"mamba_resenc": "MambaTrainer", "umamba_enc": "UMambaEncTrainer",
                                           "segmamba": "SegMambaTrainer"}[network]}
        assert p["plans_name"] == f"nnUNetMambaPlans_{network}_{gb}G"
    assert large["batch"] * np.prod(large["patch"]) > small["batch"] * np.prod(small["patch"])


def test_cli_writes_plans_and_prints_the_train_command(planned):
    _, env, pre = planned
    proc = subprocess.run([sys.executable, "-m", "nnunet_mamba.cli.main", "plan", "-d", "991", "-n", "mamba_resenc",
                           "-gpu", "11", "--no-preprocess"], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "nnUNetv2_train 991 3d_fullres 0 -tr MambaTrainer -p nnUNetMambaPlans_mamba_resenc_11G" in proc.stdout
    plans = json.loads((pre / "Dataset991_hippo" / "nnUNetMambaPlans_mamba_resenc_11G.json").read_text())
    assert plans["nnunet_mamba"]["gpu_memory_target_in_gb"] == 11
    assert plans["configurations"]["3d_fullres"]["data_identifier"] == "nnUNetPlans_3d_fullres"


def test_cli_unknown_network_is_a_clear_error(planned):
    _, env, _ = planned
    proc = subprocess.run([sys.executable, "-m", "nnunet_mamba.cli.main", "plan", "-d", "991", "-n", "nope",
                           "--no-preprocess"], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2
    assert "unknown network 'nope'" in proc.stderr and "mamba_resenc" in proc.stderr
