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

from nnunet_mamba.classification.inference import network_input, whole_image_patch
from nnunet_mamba.classification.labels import balanced_sampling_probabilities, case_classes, class_names
from nnunet_mamba.classification.metrics import auc, classification_metrics
from nnunet_mamba.classification.predict import find_cases
from nnunet_mamba.networks import EncoderClassifier, build_encoder, build_network, list_backbones
from nnunet_mamba.networks.transfer import transfer_encoder
from test_networks import plans_kwargs

MEDMNIST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "medmnist"


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
    unused = {n for n, p in net.encoder.named_parameters() if p.grad is None}
    # only SegMamba's skip heads of stages the head does not pool stay out of the graph
    assert unused == {n for n, _ in net.encoder.named_parameters() if n.startswith("skip_heads.0.")}


def _save(state, path):
    torch.save({"network_weights": state}, path)
    return str(path)


@pytest.mark.parametrize("name", ["mamba_resenc", "segmamba"])
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
