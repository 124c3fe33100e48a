"""``nnunet-mamba import-checkpoint``: a model folder written by U-Mamba's nnU-Net 2.1 fork, and a SegMamba state
dict, become model folders that current nnU-Net's predictor runs with our trainers, giving the same logits.

The U-Mamba model folders are laid out as the fork's trainer writes them (nnU-Net 2.1 plans, its checkpoint
keys), with the weights the original network was run with when the fixtures were recorded; the predictor's
logits must equal the original's recorded output.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from nnunet_mamba.cli.main import main
from test_faithful_networks import load, relative_error

DATASET = "Dataset907_Imported"
DATASET_JSON = {"channel_names": {"0": "A", "1": "B"}, "labels": {"background": 0, "a": 1, "b": 2},
                "numTraining": 2, "file_ending": ".nii.gz"}


def plans_v21(init_kwargs: dict, patch_size) -> dict:
    """Plans as nnU-Net 2.1 (U-Mamba's fork) writes them: the network described by UNet_* keys."""
    kw = init_kwargs
    cfg = {"data_identifier": "nnUNetPlans_3d_fullres", "preprocessor_name": "DefaultPreprocessor", "batch_size": 2,
           "patch_size": list(patch_size), "median_image_size_in_voxels": list(patch_size),
           "spacing": [1.0, 1.0, 1.0], "normalization_schemes": ["ZScoreNormalization"] * 2,
           "use_mask_for_norm": [False, False], "UNet_class_name": "PlainConvUNet",
           "UNet_base_num_features": kw["features_per_stage"][0], "n_conv_per_stage_encoder": kw["n_conv_per_stage"],
           "n_conv_per_stage_decoder": kw["n_conv_per_stage_decoder"],
           "num_pool_per_axis": [sum(s[a] == 2 for s in kw["strides"]) for a in range(3)],
           "pool_op_kernel_sizes": kw["strides"], "conv_kernel_sizes": kw["kernel_sizes"],
           "unet_max_num_features": kw["features_per_stage"][-1],
           "resampling_fn_data": "resample_data_or_seg_to_shape", "resampling_fn_seg": "resample_data_or_seg_to_shape",
           "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
           "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
           "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
           "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0,
                                                  "force_separate_z": None},
           "batch_dice": False}
    return {"dataset_name": DATASET, "plans_name": "nnUNetPlans", "original_median_spacing_after_transp": [1, 1, 1],
            "original_median_shape_after_transp": list(patch_size), "image_reader_writer": "SimpleITKIO",
            "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2], "configurations": {"3d_fullres": cfg},
            "experiment_planner_used": "ExperimentPlanner", "label_manager": "LabelManager",
            "foreground_intensity_properties_per_channel": {
                c: {"max": 1.0, "mean": 0.0, "median": 0.0, "min": -1.0, "percentile_00_5": -1.0,
                    "percentile_99_5": 1.0, "std": 1.0} for c in ("0", "1")}}


def fork_model_folder(root: Path, network: str, trainer: str) -> tuple[Path, dict]:
    """A model folder as U-Mamba's fork writes it, holding the recorded original weights."""
    fx = load(network)
    plans = plans_v21(fx["init_kwargs"], fx["init_kwargs"]["input_size"] if "input_size" in fx["init_kwargs"]
                      else fx["input"].shape[2:])
    folder = root / DATASET / f"{trainer}__nnUNetPlans__3d_fullres"
    (folder / "fold_0").mkdir(parents=True)
    (folder / "plans.json").write_text(json.dumps(plans))
    (folder / "dataset.json").write_text(json.dumps(DATASET_JSON))
    weights = {k: v.float() for k, v in fx["state_dict"].items()}
    torch.save({"network_weights": weights, "optimizer_state": {}, "grad_scaler_state": None, "logging": {},
                "_best_ema": 0.5, "current_epoch": 1000, "trainer_name": trainer,
                "init_args": {"plans": copy.deepcopy(plans), "configuration": "3d_fullres", "fold": 0,
                              "dataset_json": DATASET_JSON, "unpack_dataset": True, "device": torch.device("cuda")},
                "inference_allowed_mirroring_axes": (0, 1, 2)}, folder / "fold_0" / "checkpoint_final.pth")
    return folder, fx


def predictor_logits(model_folder: Path, image: torch.Tensor, fold: int = 0) -> torch.Tensor:
    """nnU-Net's sliding-window logits of one image (one tile: the image is the patch size)."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    predictor = nnUNetPredictor(use_gaussian=False, use_mirroring=False, device=torch.device("cpu"),
                                perform_everything_on_device=False, verbose=False, allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(model_folder), (fold,), "checkpoint_final.pth")
    with torch.no_grad():
        return predictor.predict_sliding_window_return_logits(image).float()


def assert_same_prediction(logits: torch.Tensor, expected: torch.Tensor) -> None:
    """nnU-Net accumulates logits in float16: equal to that precision, and the same segmentation wherever the two
    best classes are not within float16 rounding of each other."""
    assert relative_error(logits, expected) <= 2e-3
    top2 = expected.topk(2, dim=0).values
    clear = (top2[0] - top2[1]) > 4e-3 * (top2[0].abs() + 1)  # well above float16's relative step (1e-3)
    assert clear.float().mean() > 0.8
    assert torch.equal(logits.argmax(0)[clear], expected.argmax(0)[clear])


@pytest.mark.parametrize("network,trainer,ours", [("umamba_bot_3d", "nnUNetTrainerUMambaBot", "UMambaBotTrainer"),
                                                  ("umamba_enc_3d", "nnUNetTrainerUMambaEnc", "UMambaEncTrainer")])
def test_umamba_model_folder_predicts_as_the_original(tmp_path, network, trainer, ours, capsys):
    src, fx = fork_model_folder(tmp_path / "fork", network, trainer)
    assert main(["import-checkpoint", "-i", str(src), "-o", str(tmp_path / "results")]) == 0
    out = tmp_path / "results" / DATASET / f"{ours}__nnUNetPlans__3d_fullres"
    assert f"-tr {ours}" in capsys.readouterr().out
    ckpt = torch.load(out / "fold_0" / "checkpoint_final.pth", weights_only=False)
    assert ckpt["trainer_name"] == ours and "architecture" in ckpt["init_args"]["plans"]["configurations"]["3d_fullres"]
    assert ckpt["_best_ema"] == 0.5  # the rest of the checkpoint is kept
    assert_same_prediction(predictor_logits(out, fx["input"][0]), fx["outputs"][0][0])


def test_umamba_import_refuses_foreign_or_mismatched_checkpoints(tmp_path, capsys):
    src, _ = fork_model_folder(tmp_path / "fork", "umamba_bot_3d", "nnUNetTrainer")
    assert main(["import-checkpoint", "-i", str(src), "-o", str(tmp_path / "r")]) == 2
    assert "not by a U-Mamba trainer" in capsys.readouterr().err
    src, _ = fork_model_folder(tmp_path / "fork2", "umamba_bot_3d", "nnUNetTrainerUMambaEnc")  # Bot weights
    assert main(["import-checkpoint", "-i", str(src), "-o", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "checkpoint_final.pth" in err and "do not fit" in err
    assert not (tmp_path / "r" / DATASET).exists() or not any((tmp_path / "r" / DATASET).iterdir())
    assert main(["import-checkpoint", "-i", str(tmp_path / "nowhere"), "-o", str(tmp_path / "r")]) == 2


def test_import_does_not_replace_an_existing_folder_without_overwrite(tmp_path, capsys):
    src, _ = fork_model_folder(tmp_path / "fork", "umamba_bot_3d", "nnUNetTrainerUMambaBot")
    args = ["import-checkpoint", "-i", str(src), "-o", str(tmp_path / "r")]
    assert main(args) == 0
    assert main(args) == 2 and "--overwrite" in capsys.readouterr().err
    assert main(args + ["--overwrite"]) == 0


def test_segmamba_state_dict_predicts_as_the_network(tmp_path):
    from nnunet_mamba.trainers import SegMambaTrainer_ci
    from test_networks import plans_kwargs

    pre = tmp_path / "pre" / DATASET
    pre.mkdir(parents=True)
    patch = [32, 32, 32]
    kw = {k: v for k, v in plans_kwargs(3).items()}
    arch = {**{k: v for k, v in kw.items() if k not in ("conv_op", "norm_op", "nonlin", "dropout_op")},
            "conv_op": "torch.nn.modules.conv.Conv3d", "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
            "dropout_op": None, "nonlin": "torch.nn.LeakyReLU"}
    plans = plans_v21({"features_per_stage": [8, 16, 32, 64], "n_conv_per_stage": [2] * 4,
                       "n_conv_per_stage_decoder": [2] * 3, "strides": kw["strides"],
                       "kernel_sizes": kw["kernel_sizes"]}, patch)
    plans["configurations"]["3d_fullres"] = {**{k: v for k, v in plans["configurations"]["3d_fullres"].items()
                                                if k in ("data_identifier", "preprocessor_name", "batch_size",
                                                         "patch_size", "spacing", "normalization_schemes",
                                                         "use_mask_for_norm", "batch_dice")},
                                             "architecture": {"network_class_name": "x", "arch_kwargs": arch,
                                                              "_kw_requires_import": ["conv_op", "norm_op",
                                                                                      "dropout_op", "nonlin"]}}
    (pre / "nnUNetPlans.json").write_text(json.dumps(plans))
    (pre / "dataset.json").write_text(json.dumps(DATASET_JSON))
    torch.manual_seed(0)
    from nnunet_mamba.networks import build_network
    net = build_network("segmamba", {"conv_op": torch.nn.Conv3d}, 2, 3, False, **SegMambaTrainer_ci.network_options)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    torch.save({f"module.{k}": v for k, v in net.state_dict().items()}, tmp_path / "segmamba.pt")  # a DDP save
    assert main(["import-checkpoint", "--segmamba", "-i", str(tmp_path / "segmamba.pt"), "-p",
                 str(pre / "nnUNetPlans.json"), "-tr", "SegMambaTrainer_ci", "-f", "1",
                 "-o", str(tmp_path / "results")]) == 0
    out = tmp_path / "results" / DATASET / "SegMambaTrainer_ci__nnUNetPlans__3d_fullres"
    x = torch.randn(2, *patch)
    net.eval()
    with torch.no_grad():
        expected = net(x[None])[0]
    assert_same_prediction(predictor_logits(out, x, fold=1), expected)
