"""Classification: metrics against hand-computed answers, class-balanced sampling, classifier networks on every
backbone (2D/3D), encoder transfer both ways through nnU-Net's own -pretrained_weights loader, and real MedMNIST
subsets through the stock CLI (convert -> plan -> train -> validation files -> predict-class -> transfer)."""
from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from nnunetv2.run.load_pretrained_weights import load_pretrained_weights

from nnunet_mamba.classification.inference import (mirror_flips, network_input, predict_logits, softmax,
                                                   whole_image_patch)
from nnunet_mamba.classification.labels import balanced_sampling_probabilities, case_classes, class_names
from nnunet_mamba.classification.metrics import auc, classification_metrics
from nnunet_mamba.classification.predict import find_cases
from nnunet_mamba.networks import EncoderClassifier, build_encoder, build_network, list_backbones
from nnunet_mamba.networks.transfer import transfer_encoder
from test_networks import plans_kwargs

# the first 24 train / val cases of AdrenalMNIST3D and BreastMNIST ship with the tests (CC BY 4.0,
# tests/data/medmnist/SOURCE.md); the end-to-end tests use the first 16 / 12 of them
MEDMNIST = Path(__file__).resolve().parent / "data" / "medmnist"


# --- metrics ---------------------------------------------------------------------------------------------
def test_binary_metrics_known_answers():
    y = [0, 0, 0, 1, 1]
    p1 = np.array([0.1, 0.6, 0.3, 0.7, 0.4])
    m = classification_metrics(y, np.stack([1 - p1, p1], 1), ["neg", "pos"])
    # AUC: positive 0.7 outranks all 3 negatives, 0.4 outranks 2 of 3 -> 5/6
    assert m["auc"] == pytest.approx(5 / 6)
    # argmax = p1 > 0.5 -> [0, 1, 0, 1, 0]
    assert m["confusion_matrix"] == [[2, 1], [1, 1]]
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["balanced_accuracy"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert m["recall_per_class"] == pytest.approx([2 / 3, 1 / 2])
    assert m["class_counts"] == [3, 2] and m["num_cases"] == 5


def test_multiclass_metrics_known_answers():
    y = [0, 1, 2, 0, 1, 2]
    p = np.array([[0.7, 0.2, 0.1], [0.2, 0.5, 0.3], [0.1, 0.3, 0.6],
                  [0.3, 0.4, 0.3], [0.4, 0.3, 0.3], [0.2, 0.2, 0.6]])
    m = classification_metrics(y, p, ["a", "b", "c"])
    # one-vs-rest: class a 7/8, class b 6.5/8 (one tie counts 1/2), class c 8/8; macro mean
    assert m["auc"] == pytest.approx((7 / 8 + 6.5 / 8 + 1) / 3)
    assert m["confusion_matrix"] == [[1, 1, 0], [1, 1, 0], [0, 0, 2]]
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["balanced_accuracy"] == pytest.approx((0.5 + 0.5 + 1) / 3)


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
def test_auc_undefined_with_one_class_and_bad_shapes():
    assert math.isnan(auc([0, 0, 0], np.array([[0.9, 0.1], [0.2, 0.8], [0.5, 0.5]])))
    assert classification_metrics([0, 0], np.array([[0.9, 0.1], [0.2, 0.8]]), ["x", "y"])["auc"] is None
    with pytest.raises(ValueError, match=r"shape \(2, 3\); expected \(2, 2\)"):
        classification_metrics([0, 1], np.ones((2, 3)) / 3, ["x", "y"])


# --- labels and sampling ---------------------------------------------------------------------------------
def test_balanced_sampling_draws_classes_equally():
    labels = np.array([0, 0, 0, 1, 2, 2])
    p = balanced_sampling_probabilities(labels)
    assert p == pytest.approx([1 / 9, 1 / 9, 1 / 9, 1 / 3, 1 / 6, 1 / 6])
    assert p.sum() == pytest.approx(1.0)
    draws = np.random.default_rng(0).choice(len(labels), 30000, p=p)
    assert np.bincount(labels[draws]) / 30000 == pytest.approx([1 / 3] * 3, abs=0.015)


def test_prior_correction_turns_balanced_scores_into_bayes_decisions():
    """A network trained on class-balanced batches learns the likelihood ratio under a uniform prior; adding
    log(prior) gives the Bayes decision for the data's prior: accuracy above both the uncorrected argmax and the
    majority class, AUC unchanged."""
    from nnunet_mamba.classification.labels import class_prior, prior_corrected_logits
    rng = np.random.default_rng(0)
    y = (rng.random(20000) < 0.2).astype(int)  # 80 % class 0
    x = rng.normal(loc=y * 1.0, scale=1.0)
    balanced_logits = np.stack([-(x - 0.0) ** 2 / 2, -(x - 1.0) ** 2 / 2], 1)  # log-likelihoods = uniform-prior logits
    prior = class_prior(y, 2)
    assert prior == pytest.approx([0.8, 0.2], abs=0.01)
    before = classification_metrics(y, softmax(balanced_logits), ["a", "b"])
    after = classification_metrics(y, softmax(prior_corrected_logits(balanced_logits, prior)), ["a", "b"])
    bayes = ((x > 0.5 + np.log(prior[0] / prior[1])) == y).mean()  # threshold of the Bayes-optimal rule
    assert after["accuracy"] == pytest.approx(bayes, abs=1e-9)
    assert after["accuracy"] > max(before["accuracy"], 1 - y.mean()) + 0.01
    assert after["auc"] == pytest.approx(before["auc"], abs=1e-12)
    assert prior_corrected_logits(balanced_logits, None) is balanced_logits
    assert class_prior([0, 0, 0], 2) == pytest.approx([0.75, 0.25])  # an absent class keeps a nonzero prior
    with pytest.raises(ValueError, match="does not fit"):
        prior_corrected_logits(balanced_logits, [1.0])


def test_case_classes_from_dataset_json_or_csv(tmp_path, monkeypatch):
    ds = {"classification": {"classes": {"0": "no", "1": "yes"}, "cases": {"a": 0, "b": 1}}}
    assert class_names(ds) == ["no", "yes"] and case_classes(ds) == {"a": 0, "b": 1}
    (tmp_path / "D").mkdir()
    (tmp_path / "D" / "classes.csv").write_text("case,class,split\na,1,train\nb,0,val\n")
    monkeypatch.setenv("nnUNet_raw", str(tmp_path))
    monkeypatch.delenv("nnUNet_preprocessed", raising=False)
    csv_only = {"classification": {"classes": {"0": "no", "1": "yes"}, "file": "classes.csv"}}
    assert case_classes(csv_only, "D") == {"a": 1, "b": 0}
    with pytest.raises(ValueError, match=r"case 'b' has class 2, outside 0..1"):
        case_classes({"classification": {"classes": {"0": "no", "1": "yes"}, "cases": {"a": 0, "b": 2}}})
    with pytest.raises(ValueError, match="no 'classification' record"):
        class_names({"labels": {"background": 0}})


def test_whole_image_patch_and_network_input():
    patch, whole = whole_image_patch([(10, 15, 14), (20, 24, 27), (6, 7, 8)], [10, 16, 16], (2, 4, 4), 60)
    assert patch == [20, 24, 28] and whole
    patch, whole = whole_image_patch([(200, 200, 200)], [10, 16, 16], (2, 4, 4), 60)
    assert patch == [10, 16, 16] and not whole  # too large for the plans' budget: the plans' patch
    x = np.ones((1, 10, 15, 14), np.float32)
    y = network_input(x, [20, 24, 28], (2, 4, 4))
    assert y.shape == (1, 20, 24, 28) and y.sum() == x.sum()
    assert y[0, 5:15, 4:19, 7:21].min() == 1  # centred
    assert network_input(np.ones((1, 25, 5, 5)), [20, 24, 28], (2, 4, 4)).shape == (1, 26, 24, 28)
    assert network_input(np.ones((2, 1, 28, 28)), [32, 32], (4, 4)).shape == (2, 32, 32)
    with pytest.raises(ValueError, match="single-slice"):
        network_input(np.ones((1, 3, 28, 28)), [32, 32], (4, 4))


class _Corner(torch.nn.Module):
    """'Logits' = (the first voxel, 0): mirrored inputs move other corners there."""
    def forward(self, x):
        v = x[:, 0, 0, 0, 0]
        return torch.stack([v, torch.zeros_like(v)], 1)


def test_test_time_mirroring_averages_every_flip():
    assert mirror_flips(None) == [()]
    assert mirror_flips([0, 2]) == [(), (2,), (4,), (2, 4)]
    assert len(mirror_flips((0, 1, 2))) == 8
    x = np.arange(2 * 3 * 4, dtype=np.float32).reshape(1, 2, 3, 4)  # corners 0, 3, 8, 11, 12, 15, 20, 23
    plain = predict_logits(_Corner(), [x], torch.device("cpu"))
    assert plain[0, 0] == 0
    assert predict_logits(_Corner(), [x], torch.device("cpu"), mirror_axes=[2])[0, 0] == pytest.approx(1.5)
    every = predict_logits(_Corner(), [x], torch.device("cpu"), mirror_axes=(0, 1, 2))
    assert every[0, 0] == pytest.approx(np.mean([0, 3, 8, 11, 12, 15, 20, 23]))


def test_scale_augmentation_can_be_turned_off():
    from batchgeneratorsv2.transforms.spatial.spatial import SpatialTransform
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunet_mamba.trainers.classification import (MambaClassifierTrainer, MambaClassifierTrainer_shape_bs32,
                                                      NoMambaClassifierTrainer_shape_bs32, without_scaling)
    transforms = nnUNetTrainer.get_training_transforms([20, 28, 28], (-0.5, 0.5), None, (0, 1, 2), False)
    spatial = [t for t in transforms.transforms if isinstance(t, SpatialTransform)]
    assert len(spatial) == 1 and spatial[0].p_scaling > 0  # nnU-Net zooms by default
    assert without_scaling(transforms) is transforms and spatial[0].p_scaling == 0
    with pytest.raises(RuntimeError, match="SpatialTransform"):
        without_scaling(torch.nn.Identity())
    assert MambaClassifierTrainer.scale_augmentation  # default: nnU-Net's augmentation
    for cls in (MambaClassifierTrainer_shape_bs32, NoMambaClassifierTrainer_shape_bs32):  # the same for both
        assert not cls.scale_augmentation and cls.test_time_mirroring and cls.validate_best_checkpoint
        assert cls.schedule == dict(num_epochs=20, num_iterations_per_epoch=100) and cls.batch_size_override == 32


# --- networks and transfer ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list_backbones())
@pytest.mark.parametrize("ndim", [2, 3])
def test_classifier_on_every_backbone(name, ndim):
    kw = plans_kwargs(ndim, n_stages=3)
    net = EncoderClassifier(build_encoder(name, kw, input_channels=2), num_classes=3)
    seg = build_network(name, kw, input_channels=2, num_classes=4, deep_supervision=False)
    assert {k for k in net.state_dict() if k.startswith("encoder.")} == \
        {k for k in seg.state_dict() if k.startswith("encoder.")}
    assert net.total_stride == (4,) * ndim
    for size in (16, 24):  # any size divisible by the total stride
        out = net(torch.randn(2, 2, *[size] * ndim))
        assert out.shape == (2, 3)
    out.sum().backward()
    assert all(p.grad is not None for p in net.encoder.parameters())


def _save(state, path):
    torch.save({"network_weights": state}, path)
    return str(path)


@pytest.mark.parametrize("name", ["mamba_resenc", "nomamba"])
def test_transfer_segmentation_to_classifier_and_back(tmp_path, name):
    kw = plans_kwargs(3, n_stages=3)
    seg = build_network(name, kw, 1, 3, deep_supervision=True)
    seg.apply(seg.initialize)
    cls = EncoderClassifier(build_encoder(name, kw, 1), num_classes=2)
    weights, n = transfer_encoder(seg.state_dict(), cls)
    assert n == len([k for k in cls.state_dict() if k.startswith("encoder.")])
    load_pretrained_weights(cls, _save(weights, tmp_path / "to_cls.pth"))  # nnU-Net's own -pretrained_weights
    for k, v in seg.state_dict().items():
        if k.startswith("encoder."):
            assert torch.equal(cls.state_dict()[k], v), k
    # and back: a classifier's (changed) encoder initialises a fresh segmentation network
    with torch.no_grad():
        for p in cls.encoder.parameters():
            p.add_(0.5)
    seg2 = build_network(name, kw, 1, 3, deep_supervision=True)
    decoder_before = {k: v.clone() for k, v in seg2.state_dict().items()
                      if k.startswith("decoder.") and not k.startswith("decoder.encoder.")}
    weights, _ = transfer_encoder(cls.state_dict(), seg2)
    load_pretrained_weights(seg2, _save(weights, tmp_path / "to_seg.pth"))
    for k, v in cls.state_dict().items():
        if k.startswith("encoder."):
            assert torch.equal(seg2.state_dict()[k], v) and torch.equal(seg2.encoder.state_dict()[k[8:]], v), k
    assert decoder_before and all(torch.equal(seg2.state_dict()[k], v) for k, v in decoder_before.items())


def test_transfer_refuses_another_backbone():
    kw = plans_kwargs(3, n_stages=3)
    wide = dict(kw, features_per_stage=[16, 32, 64])
    cls = EncoderClassifier(build_encoder("nomamba", kw, 1), 2)
    with pytest.raises(ValueError, match="of another shape"):
        transfer_encoder(build_network("nomamba", wide, 1, 2).state_dict(), cls)
    with pytest.raises(ValueError, match="missing from the source"):
        transfer_encoder(build_network("nomamba", kw, 1, 2).state_dict(),
                         EncoderClassifier(build_encoder("mamba_resenc", kw, 1), 2))
    with pytest.raises(ValueError, match="not a backbone"):
        build_encoder("umamba_enc", kw, 1)


def test_find_cases_errors(tmp_path):
    for name in ("a_0000.nii.gz", "a_0001.nii.gz", "b_0000.nii.gz"):
        (tmp_path / name).write_bytes(b"")
    with pytest.raises(ValueError, match=r"case 'b' has channel\(s\) \[0\]; the model expects 2"):
        find_cases(tmp_path, ".nii.gz", 2)
    (tmp_path / "b_0001.nii.gz").write_bytes(b"")
    assert find_cases(tmp_path, ".nii.gz", 2)["a"][1].endswith("a_0001.nii.gz")
    (tmp_path / "notes.nii.gz").write_bytes(b"")
    with pytest.raises(ValueError, match="notes.nii.gz: not named"):
        find_cases(tmp_path, ".nii.gz", 2)


# --- real MedMNIST subsets through the stock CLI (slow) ----------------------------------------------------
def cli(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


def run(cmd, env, ok=True, timeout=600):
    out = subprocess.run([str(c) for c in cmd], env=env, capture_output=True, text=True, timeout=timeout)
    if ok:
        assert out.returncode == 0, f"{' '.join(map(str, cmd))}\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def trained_classifier(root: Path, npz: str, dataset_id: int, config: str, trainer: str, n: int):
    from nnunet_mamba.dataset_conversion.medmnist import convert_medmnist
    env = {k: v for k, v in os.environ.items() if k != "nnUNet_extTrainer"}
    env.update(nnUNet_raw=str(root / "raw"), nnUNet_preprocessed=str(root / "pre"), nnUNet_results=str(root / "res"),
               nnUNet_def_n_proc="1", nnUNet_compile="f", PYTHONUNBUFFERED="1")
    ds = convert_medmnist(MEDMNIST / npz, dataset_id, f"E2E{dataset_id}", ["normal", "abnormal"], root / "raw",
                          max_per_split=n)
    run([cli("nnUNetv2_plan_and_preprocess"), "-d", dataset_id, "-c", config, "-np", "1", "-npfp", "1"], env)
    run([cli("nnUNetv2_train"), dataset_id, config, "0", "-tr", trainer, "-device", "cpu"],
        dict(env, nnUNet_n_proc_DA="0"))
    model = root / "res" / ds.name / f"{trainer}__nnUNetPlans__{config}"
    return env, ds, model


def check_fold_outputs(model: Path, n_val: int) -> list[dict]:
    fold = model / "fold_0"
    summary = json.loads((fold / "validation" / "summary.json").read_text())
    assert {"accuracy", "balanced_accuracy", "auc", "confusion_matrix", "class_counts", "selection"} <= set(summary)
    assert len(summary["history"]["val_auc"]) == len(summary["history"]["train_losses"]) == 2
    assert summary["selection"]["best_epoch"] in (0, 1)
    rows = read_csv(fold / "validation" / "predictions.csv")
    assert len(rows) == n_val == summary["num_cases"] == sum(summary["class_counts"])
    y = np.array([int(r["true_class"]) for r in rows])
    p = np.array([[float(r["p_normal"]), float(r["p_abnormal"])] for r in rows])
    again = classification_metrics(y, p, ["normal", "abnormal"])  # the summary is the metrics of the CSV
    assert summary["confusion_matrix"] == again["confusion_matrix"]
    assert summary["accuracy"] == pytest.approx(again["accuracy"], abs=1e-6)
    assert summary["auc"] == pytest.approx(again["auc"], abs=1e-4)
    for png in ("roc.png", "confusion.png", "progress.png"):
        assert (fold / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ckpt = torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert ckpt["classification"]["class_names"] == ["normal", "abnormal"] and ckpt["current_epoch"] == 2
    prior = ckpt["classification"]["class_prior"]  # the training fold's class frequencies, never the validation's
    assert sum(prior) == pytest.approx(1.0) and summary["class_prior"] == pytest.approx(prior)
    assert (fold / "checkpoint_best.pth").is_file() and not (fold / "checkpoint_latest.pth").exists()
    return rows


def check_predict_class(env, model: Path, images: Path, validation: list[dict], out: Path) -> None:
    got = run([sys.executable, "-m", "nnunet_mamba.cli.main", "predict-class", "-i", images, "-o", out, "-m", model,
               "-device", "cpu"], env)
    rows = read_csv(out)
    assert list(rows[0]) == ["case", "p_normal", "p_abnormal", "predicted_class", "predicted_index"], got.stdout
    cases = sorted(p.name[:-len("_0000.nii.gz")] for p in images.glob("*_0000.nii.gz"))
    assert [r["case"] for r in rows] == cases
    val = {r["case"]: r for r in validation}
    for r in rows:
        p = np.array([float(r["p_normal"]), float(r["p_abnormal"])])
        assert p.sum() == pytest.approx(1.0, abs=1e-5)
        assert int(r["predicted_index"]) == int(np.argmax(p))
        assert r["predicted_class"] == ["normal", "abnormal"][int(np.argmax(p))]
        # same preprocessing and network as the trainer's validation: same probabilities
        assert p[1] == pytest.approx(float(val[r["case"]]["p_abnormal"]), abs=1e-4)


def copy_val_images(ds: Path, dest: Path, n: int) -> Path:
    dest.mkdir()
    for p in sorted((ds / "imagesTr").glob("val_*_0000.nii.gz"))[:n]:
        (dest / p.name).write_bytes(p.read_bytes())
    return dest


@pytest.mark.slow
def test_adrenal3d_train_validate_predict_transfer(tmp_path, capsys, monkeypatch):
    env, ds, model = trained_classifier(tmp_path, "adrenalmnist3d.npz", 981, "3d_fullres",
                                        "MambaClassifierTrainer_ci", n=16)
    validation = check_fold_outputs(model, 16)
    images = copy_val_images(ds, tmp_path / "images", 5)
    check_predict_class(env, model, images, validation, tmp_path / "pred.csv")

    # bad inputs: one clear line each (exit 2), no CSV written
    from nnunet_mamba.cli.main import main
    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(var, env[var])

    def fails(argv, message):
        assert main([str(a) for a in argv]) == 2
        assert message in capsys.readouterr().err

    predict = ["predict-class", "-i", images, "-o", tmp_path / "x.csv", "-device", "cpu", "-m"]
    fails(predict + [model / "fold_0"], "not a trained model folder (plans.json missing)")
    (images / "broken_0000.nii.gz").write_bytes(b"not an image")
    fails(predict + [model], "broken_0000.nii.gz: cannot be read")
    (images / "broken_0000.nii.gz").rename(images / "broken_0001.nii.gz")
    fails(predict + [model], "case 'broken' has channel(s) [1]; the model expects 1")
    assert not (tmp_path / "x.csv").exists() and not list(tmp_path.glob("*.partial"))

    # classifier -> segmentation network (the stock -pretrained_weights loader accepts the file)
    from nnunet_mamba.cli.transfer import target_network
    run([sys.executable, "-m", "nnunet_mamba.cli.main", "transfer", "-i", model / "fold_0" / "checkpoint_final.pth",
         "-o", tmp_path / "to_seg.pth", "-d", "981", "-c", "3d_fullres", "-tr", "MambaTrainer_ci"], env)
    seg = target_network("981", "3d_fullres", "MambaTrainer_ci")
    load_pretrained_weights(seg, str(tmp_path / "to_seg.pth"))
    cls_weights = torch.load(model / "fold_0" / "checkpoint_final.pth", weights_only=False)["network_weights"]
    assert all(torch.equal(seg.state_dict()[k], v) for k, v in cls_weights.items() if k.startswith("encoder."))

    # segmentation -> classifier through the stock CLI: nnUNetv2_train -pretrained_weights
    seg_nomamba = target_network("981", "3d_fullres", "NoMambaTrainer_ci")
    torch.save({"network_weights": seg_nomamba.state_dict(), "trainer_name": "NoMambaTrainer_ci"},
               tmp_path / "seg.pth")
    run([sys.executable, "-m", "nnunet_mamba.cli.main", "transfer", "-i", tmp_path / "seg.pth", "-o",
         tmp_path / "to_cls.pth", "-d", "981", "-c", "3d_fullres", "-tr", "NoMambaClassifierTrainer_ci"], env)
    fails(["transfer", "-i", tmp_path / "seg.pth", "-o", tmp_path / "wrong.pth", "-d", "981", "-c", "3d_fullres",
           "-tr", "MambaClassifierTrainer_ci"], "the backbones differ")
    out = run([cli("nnUNetv2_train"), "981", "3d_fullres", "0", "-tr", "NoMambaClassifierTrainer_ci", "-device", "cpu",
               "-pretrained_weights", tmp_path / "to_cls.pth"], dict(env, nnUNet_n_proc_DA="0"))
    assert "Loading pretrained weights" in out.stdout
    assert (model.parent / "NoMambaClassifierTrainer_ci__nnUNetPlans__3d_fullres" / "fold_0" / "roc.png").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("npz,config,trainer", [("adrenalmnist3d.npz", "3d_fullres", "NnMambaClassifierTrainer_ci"),
                                                ("breastmnist.npz", "2d", "MedMambaClassifierTrainer_ci")])
def test_published_classifiers_train_validate_and_predict(tmp_path, npz, config, trainer):
    """nnMamba's and MedMamba's classification networks through the stock CLI and predict-class."""
    env, ds, model = trained_classifier(tmp_path, npz, 983, config, trainer, n=12)
    validation = check_fold_outputs(model, 12)
    images = copy_val_images(ds, tmp_path / "images", 4)
    check_predict_class(env, model, images, validation, tmp_path / "pred.csv")


@pytest.mark.slow
def test_breastmnist_2d_train_and_predict(tmp_path):
    env, ds, model = trained_classifier(tmp_path, "breastmnist.npz", 982, "2d", "NoMambaClassifierTrainer_ci", n=12)
    validation = check_fold_outputs(model, 12)
    images = copy_val_images(ds, tmp_path / "images", 4)
    check_predict_class(env, model, images, validation, tmp_path / "pred.csv")
    # --val alone (a new process) restores the training patch from the checkpoint: the same predictions
    summary = model / "fold_0" / "validation" / "summary.json"
    before = json.loads(summary.read_text())
    summary.unlink()
    run([cli("nnUNetv2_train"), "982", "2d", "0", "-tr", "NoMambaClassifierTrainer_ci", "-device", "cpu", "--val"],
        dict(env, nnUNet_n_proc_DA="0"))
    after = json.loads(summary.read_text())
    assert after["patch_size"] == before["patch_size"] and after["auc"] == pytest.approx(before["auc"], abs=1e-6)
