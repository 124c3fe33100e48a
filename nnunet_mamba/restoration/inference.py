"""Restoring one preprocessed case and putting it back into the original geometry and intensity scale.

Intensity scaling (the same in training, validation and ``nnunet-mamba restore``): the degraded channel is kept
unnormalised by nnU-Net ("noNorm"); the network sees ``degraded / s`` with ``s = case_scale(degraded)``, the
99.5th percentile of |degraded| over the whole preprocessed (cropped, resampled) case, and its output is multiplied
by ``s`` again. Only the degraded input defines ``s``, so inference needs nothing but the degraded image.
Geometry: nnU-Net's own steps in reverse: resampling back to the cropped shape (the plans' data resampling
function), the crop put back into the full image (zeros outside, where the input was zero), transpose back.
"""
from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import SimpleITK as sitk
import torch
from acvl_utils.cropping_and_padding.bounding_boxes import insert_crop_into_image


def case_scale(degraded: np.ndarray) -> float:
    s = float(np.percentile(np.abs(np.asarray(degraded, np.float32)), 99.5))
    return s if np.isfinite(s) and s > 0 else 1.0


def make_predictor(network, plans_manager, configuration_manager, dataset_json, mirror_axes, device,
                   tile_step_size: float = 0.5):
    """nnU-Net's sliding-window predictor around a 1-in/1-out restorer."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    predictor = nnUNetPredictor(tile_step_size=tile_step_size, use_gaussian=True, use_mirroring=mirror_axes is not None,
                                perform_everything_on_device=True, device=device, verbose=False,
                                verbose_preprocessing=False, allow_tqdm=False)
    predictor.manual_initialization(network, plans_manager, configuration_manager, None, dataset_json,
                                    "restoration", mirror_axes)
    predictor.label_manager = SimpleNamespace(num_segmentation_heads=1)  # one output image, not class logits
    return predictor


def restore_preprocessed(predictor, degraded: np.ndarray | torch.Tensor) -> np.ndarray:
    """(1, *spatial) degraded case on the plans' grid -> restored (*spatial), in the input's intensity scale.
    The sliding-window sums are accumulated in float32 here (nnU-Net's are float16, too coarse for images)."""
    x = torch.as_tensor(np.asarray(degraded, np.float32)[:1])
    s = case_scale(x.numpy())
    out = _sliding_window_fp32(predictor, x / s)
    return out[0].numpy() * s


def _sliding_window_fp32(predictor, x: torch.Tensor) -> torch.Tensor:
    from acvl_utils.cropping_and_padding.padding import pad_nd_image
    from nnunetv2.inference.sliding_window_prediction import compute_gaussian
    from nnunetv2.utilities.helpers import dummy_context, empty_cache
    patch = predictor.configuration_manager.patch_size
    device = predictor.device
    predictor.network.to(device).eval()
    data, revert = pad_nd_image(x, patch, "constant", {"value": 0}, True, None)
    slicers = predictor._internal_get_sliding_window_slicers(data.shape[1:])
    out = torch.zeros((1, *data.shape[1:]), dtype=torch.float32)
    weight = torch.zeros(data.shape[1:], dtype=torch.float32)
    gauss = compute_gaussian(tuple(patch), sigma_scale=1. / 8, value_scaling_factor=10, dtype=torch.float32,
                             device=torch.device("cpu"))
    amp = torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float16
    with torch.inference_mode(), (torch.autocast(device.type, dtype=amp) if device.type == "cuda" else dummy_context()):
        for sl in slicers:
            tile = data[sl][None].to(device)
            pred = predictor._internal_maybe_mirror_and_predict(tile)[0].float().cpu()
            out[sl] += pred * gauss
            weight[sl[1:]] += gauss
    empty_cache(device)
    out /= weight
    return out[(slice(None), *revert[1:])]


def to_original_geometry(image: np.ndarray, properties: dict, plans_manager, configuration_manager) -> np.ndarray:
    """An image on the plans' grid -> the input file's array (SimpleITK axis order)."""
    spacing_t = [properties["spacing"][i] for i in plans_manager.transpose_forward]
    shape_crop = properties["shape_after_cropping_and_before_resampling"]
    current = configuration_manager.spacing if len(configuration_manager.spacing) == len(shape_crop) \
        else [spacing_t[0], *configuration_manager.spacing]
    resampled = configuration_manager.resampling_fn_data(np.asarray(image, np.float32)[None], shape_crop, current,
                                                         spacing_t)[0]
    full = np.zeros(properties["shape_before_cropping"], np.float32)
    full = insert_crop_into_image(full, np.asarray(resampled, np.float32), properties["bbox_used_for_cropping"])
    return np.asarray(full).transpose(plans_manager.transpose_backward)


def write_image(array: np.ndarray, properties: dict, path: str | Path) -> Path:
    """Write float32 ``array`` with the geometry nnU-Net read (``properties['sitk_stuff']``), atomically."""
    if "sitk_stuff" not in properties:
        raise RuntimeError(f"{path}: restoration writes images through SimpleITK; this dataset's reader stores no "
                           "SimpleITK geometry (use .nii.gz / .nrrd / .mha inputs)")
    geo = properties["sitk_stuff"]
    arr = np.asarray(array, np.float32)
    if len(geo["spacing"]) == 2:
        arr = arr[0]
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(geo["spacing"])
    img.SetOrigin(geo["origin"])
    img.SetDirection(geo["direction"])
    path = Path(path)
    tmp = path.with_name(f".partial-{os.getpid()}-{path.name}")
    try:
        sitk.WriteImage(img, str(tmp), True)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path
