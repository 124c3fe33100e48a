"""Restoration: degradations, metrics, loss, residual head, transfer, and (slow) the stock CLI end to end on CPU."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from scipy.ndimage import gaussian_filter
from skimage.metrics import structural_similarity

from nnunet_mamba.dataset_conversion.degrade import convert_degrade
from nnunet_mamba.networks import build_network, resolve_arch_kwargs
from nnunet_mamba.networks.restorer import build_restorer
from nnunet_mamba.restoration import metrics
from nnunet_mamba.restoration.degradations import (Degradation, add_gaussian_noise, add_rician_noise, cartesian_mask,
                                                   kspace_undersample, thick_slices, through_plane_sr)
from nnunet_mamba.restoration.losses import RestorationLoss, ssim as torch_ssim

DEMO = Path(__file__).resolve().parents[1] / "nnunet_mamba" / "data" / "hippocampus_demo"


def real_image() -> np.ndarray:
    f = sorted((DEMO / "imagesTr").glob("*.nii.gz"))[0]
    return sitk.GetArrayFromImage(sitk.ReadImage(str(f))).astype(np.float64)


# --- degradations --------------------------------------------------------------------------------------------------
def test_gaussian_and_rician_noise_have_the_requested_sigma():
    rng = np.random.default_rng(0)
    flat = np.full((40, 40, 40), 100.0)
    g = add_gaussian_noise(flat, 5.0, rng)
    assert abs(g.std() - 5.0) < 0.1 and abs(g.mean() - 100.0) < 0.1
    r = add_rician_noise(np.zeros((40, 40, 40)), 5.0, rng)  # zero signal: Rayleigh, mean sigma * sqrt(pi / 2)
    assert abs(r.mean() - 5.0 * np.sqrt(np.pi / 2)) < 0.1 and r.min() >= 0
    high = add_rician_noise(flat * 10, 5.0, rng)  # high SNR: ~Gaussian around the signal
    assert abs(high.std() - 5.0) < 0.15


def test_denoise_level_is_a_fraction_of_the_robust_maximum_and_seeded():
    img = real_image()
    deg = Degradation("denoise", noise="gaussian", level=0.1)
    a, drawn = deg.apply(img, (1, 1, 1), np.random.default_rng(3))
    b, _ = deg.apply(img, (1, 1, 1), np.random.default_rng(3))
    c, _ = deg.apply(img, (1, 1, 1), np.random.default_rng(4))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert drawn["sigma"] == pytest.approx(0.1 * np.percentile(img, 99.5))
    assert np.std(a - img) == pytest.approx(drawn["sigma"], rel=0.03)


def test_super_resolution_block_means_and_linear_ramp():
    rng = np.random.default_rng(0)
    img = rng.random((8, 5, 6))
    assert np.allclose(thick_slices(img, 2, 0), img.reshape(4, 2, 5, 6).mean(1))
    assert np.allclose(thick_slices(img, 4, 2)[..., 0], img[..., :4].mean(2))
    assert np.allclose(thick_slices(img, 4, 2)[..., 1], img[..., 4:].mean(2))  # shorter last block
    ramp = np.broadcast_to(np.arange(16, dtype=float)[:, None, None], (16, 3, 3))
    out = through_plane_sr(ramp, 4, 0)  # block centres 1.5, 5.5, 9.5, 13.5 lie on the ramp
    assert out.shape == ramp.shape
    assert np.allclose(out[2:14], ramp[2:14], atol=1e-5)  # interior: linear interpolation reproduces it
    assert np.allclose(out[:2], 1.5) and np.allclose(out[14:], 13.5)  # clamped ends
    deg, info = Degradation("sr", factor=2).apply(img, (1.0, 1.0, 3.0), np.random.default_rng(0))
    assert info["slice_axis"] == 2  # largest spacing (x) is the through-plane axis


def test_sr_cubic_baseline_reproduces_a_cubic_and_beats_linear_on_a_curve():
    from nnunet_mamba.restoration.baselines import sr_cubic
    z = np.arange(24, dtype=float)
    # block means of a quadratic are the quadratic at the block centre plus a constant: a cubic spline through
    # them is exact in the interior, linear interpolation is not
    quad = np.broadcast_to((0.05 * z ** 2)[:, None, None], (24, 2, 2))
    cubic, linear = sr_cubic(quad, 2, 0), through_plane_sr(quad, 2, 0)
    offset = 0.05 * 0.25  # mean of q(c - 1/2), q(c + 1/2) minus q(c)
    assert cubic.shape == quad.shape
    assert np.allclose(cubic[3:-3], quad[3:-3] + offset, atol=1e-4)
    assert np.abs(linear - quad).mean() > np.abs(cubic - quad).mean()


def test_kspace_mask_acceleration_and_centre():
    rng = np.random.default_rng(1)
    mask = cartesian_mask(100, 4, 0.08, rng)
    assert mask.sum() == 25 and mask[46:54].all()
    assert not np.array_equal(mask, cartesian_mask(100, 4, 0.08, np.random.default_rng(2)))
    img = real_image()
    full = kspace_undersample(img, np.ones(img.shape[1], bool), 0)
    assert np.allclose(full, np.abs(img), atol=1e-4 * img.max())  # all lines: the image itself
    under, info = Degradation("kspace", acceleration=4).apply(img, (1, 1, 1), rng)
    assert len(info["lines_kept"]) == round(img.shape[1] / 4)
    assert metrics.psnr(img, under) < 40


def test_cs_tv_baseline_keeps_acquired_lines_and_beats_zero_filling():
    from nnunet_mamba.restoration.baselines import cs_tv_reconstruct
    from nnunet_mamba.restoration.degradations import measured_kspace, robust_max
    img = real_image()
    full = np.ones(img.shape[1], bool)  # every line acquired: data consistency gives the image back
    assert np.allclose(cs_tv_reconstruct(measured_kspace(img, full, 0), full, 0, 0.05 * img.max(), 5), img,
                       atol=1e-4 * img.max())
    mask = cartesian_mask(img.shape[1], 4, 0.08, np.random.default_rng(3))
    zero_filled = kspace_undersample(img, mask, 0)
    cs = cs_tv_reconstruct(measured_kspace(img, mask, 0), mask, 0, 0.02 * robust_max(zero_filled), 20)
    assert cs.shape == img.shape and metrics.psnr(img, cs) > metrics.psnr(img, zero_filled) + 1
    with pytest.raises(ValueError, match="lines"):
        measured_kspace(img, mask[:-1], 0)


# --- metrics and loss ----------------------------------------------------------------------------------------------
def test_psnr_known_answers_and_identity_restorer():
    clean = np.linspace(0, 1, 1000).reshape(10, 10, 10)
    assert metrics.psnr(clean, clean + 0.1) == pytest.approx(20.0)
    assert metrics.psnr(clean, clean) == float("inf")
    img = real_image()
    img = img[tuple(slice(0, n // 4 * 4) for n in img.shape)]  # a shape the 3-stage U-Net takes as it is
    noisy, _ = Degradation("denoise", level=0.05).apply(img, (1, 1, 1), np.random.default_rng(0))
    net = build_restorer("nomamba", _arch(3))
    with torch.no_grad():
        identity = net(torch.from_numpy(noisy)[None, None].float())[0, 0].numpy()
    assert metrics.psnr(img, identity) == pytest.approx(metrics.psnr(img, noisy), abs=1e-4)
    assert metrics.ssim(img, identity) == pytest.approx(metrics.ssim(img, noisy), abs=1e-5)


@pytest.mark.parametrize("shape", [(31, 40, 27), (61, 53)])
def test_noise_sigma_recovers_white_noise_on_a_smooth_image(shape):
    rng = np.random.default_rng(1)
    smooth = gaussian_filter(rng.random(shape), 4.0) * 10
    for sigma in (0.02, 0.1):
        assert metrics.noise_sigma(smooth + sigma * rng.standard_normal(shape)) == pytest.approx(sigma, rel=0.08)
    assert metrics.noise_sigma(smooth) < 0.01  # structure alone is not noise
    with pytest.raises(ValueError, match="length >= 3"):
        metrics.noise_sigma(np.zeros((2, 2)))


def test_denoising_ceiling_is_the_wiener_floor():
    clean = np.linspace(0, 1, 1000).reshape(10, 10, 10)  # range 1
    # c = a = 0.1: floor = c^2 a^2 / (c^2 + a^2) = 0.005 -> 10 log10(1 / 0.005)
    assert metrics.denoising_ceiling_psnr(clean, 0.1, clean_sigma=0.1) == pytest.approx(10 * np.log10(200))
    assert metrics.denoising_ceiling_psnr(clean, 0.1, clean_sigma=0.0) == float("inf")  # noiseless reference
    # a perfect Wiener estimate on synthetic data reaches the bound
    rng = np.random.default_rng(2)
    signal = np.zeros((40, 40, 40))
    clean = signal + 0.05 * rng.standard_normal(signal.shape)
    degraded = clean + 0.1 * rng.standard_normal(signal.shape)
    wiener = signal + 0.05 ** 2 / (0.05 ** 2 + 0.1 ** 2) * (degraded - signal)
    bound = metrics.denoising_ceiling_psnr(clean, 0.1, clean_sigma=0.05)
    assert metrics.psnr(clean, wiener) == pytest.approx(bound, abs=0.05)
    assert metrics.psnr(clean, degraded) < bound - 5


@pytest.mark.parametrize("shape", [(18, 21, 24), (30, 33)])
def test_torch_ssim_equals_scikit_image(shape):
    rng = np.random.default_rng(0)
    a = gaussian_filter(rng.random(shape), 1.0)
    b = a + 0.05 * rng.standard_normal(shape)
    ours = float(torch_ssim(torch.tensor(b)[None, None], torch.tensor(a)[None, None], data_range=1.0))
    theirs = structural_similarity(a, b, data_range=1.0, gaussian_weights=True, sigma=1.5,
                                   use_sample_covariance=False)
    assert ours == pytest.approx(theirs, abs=1e-5)
    assert float(RestorationLoss()(torch.tensor(a)[None, None],
                                   torch.tensor(a)[None, None])) == pytest.approx(0, abs=1e-6)


def test_nlm_baseline_denoises_a_real_image():
    from nnunet_mamba.restoration.baselines import nlm_denoise
    img = real_image()
    noisy, drawn = Degradation("denoise", noise="gaussian", level=0.1).apply(img, (1, 1, 1), np.random.default_rng(0))
    out, sigma = nlm_denoise(noisy, drawn["sigma"], 0.6)
    assert sigma == drawn["sigma"] and out.shape == img.shape
    assert metrics.psnr(img, out) > metrics.psnr(img, noisy) + 1


def test_restoration_trainer_refuses_a_segmentation_dataset():
    from nnunet_mamba.trainers.restoration import restoration_info
    seg = {"channel_names": {"0": "MRI"}, "labels": {"background": 0, "a": 1}, "file_ending": ".nii.gz"}
    with pytest.raises(RuntimeError, match="not a restoration dataset"):
        restoration_info(seg)


# --- network and transfer ------------------------------------------------------------------------------------------
def _arch(n_stages=3, conv=torch.nn.Conv3d):
    return resolve_arch_kwargs({
        "n_stages": n_stages, "features_per_stage": [8, 16, 32, 32][:n_stages], "conv_op": conv,
        "kernel_sizes": [[3, 3, 3]] * n_stages, "strides": [[1, 1, 1]] + [[2, 2, 2]] * (n_stages - 1),
        "n_blocks_per_stage": [1] * n_stages, "n_conv_per_stage_decoder": [1] * (n_stages - 1), "conv_bias": True,
        "norm_op": torch.nn.InstanceNorm3d, "norm_op_kwargs": {"eps": 1e-5, "affine": True}, "dropout_op": None,
        "dropout_op_kwargs": None, "nonlin": torch.nn.LeakyReLU, "nonlin_kwargs": {"inplace": True}})


@pytest.mark.parametrize("name", ["nomamba", "mamba_resenc"])
def test_residual_head_starts_as_identity(name):
    net = build_restorer(name, _arch(3))
    x = torch.randn(2, 1, 16, 16, 16)
    with torch.no_grad():
        assert torch.equal(net(x), x)
    torch.nn.init.normal_(net.output_layer().weight)
    with torch.no_grad():
        assert not torch.allclose(net(x), x)


def test_segmentation_checkpoint_transfers_both_ways(tmp_path):
    """nnU-Net's stock load_pretrained_weights (skips .seg_layers.): segmentation <-> restorer."""
    from nnunetv2.run.load_pretrained_weights import load_pretrained_weights
    seg = build_network("mamba_resenc", _arch(3), input_channels=1, num_classes=3, deep_supervision=True)
    torch.save({"network_weights": seg.state_dict()}, tmp_path / "seg.pth")
    res = build_restorer("mamba_resenc", _arch(3))
    load_pretrained_weights(res, str(tmp_path / "seg.pth"))
    rs, ss = res.state_dict(), seg.state_dict()
    shared = [k for k in rs if ".seg_layers." not in k]
    assert len(shared) > 20 and all(torch.equal(rs[k], ss[k]) for k in shared)
    assert not res.output_layer().weight.any()  # the restoration output layer stays zero: identity + encoder
    for p in res.parameters():
        torch.nn.init.normal_(p)
    torch.save({"network_weights": res.state_dict()}, tmp_path / "res.pth")
    seg2 = build_network("mamba_resenc", _arch(3), input_channels=1, num_classes=3, deep_supervision=True)
    load_pretrained_weights(seg2, str(tmp_path / "res.pth"))
    s2 = seg2.state_dict()
    assert all(torch.equal(s2[k], res.state_dict()[k]) for k in shared)


# --- conversion ----------------------------------------------------------------------------------------------------
def small_source(root: Path, n_train=8, n_test=2) -> Path:
    """A few shipped Hippocampus demo cases as an nnU-Net raw dataset (one channel)."""
    src = root / "Dataset900_HippoSrc"
    for sub in ("imagesTr", "imagesTs"):
        (src / sub).mkdir(parents=True)
    for sub, n in (("imagesTr", n_train), ("imagesTs", n_test)):
        for f in sorted((DEMO / sub).glob("*.nii.gz"))[:n]:
            (src / sub / f.name.replace(".nii.gz", "_0000.nii.gz")).write_bytes(f.read_bytes())
    (src / "dataset.json").write_text(json.dumps({"channel_names": {"0": "MRI"}, "file_ending": ".nii.gz",
                                                  "labels": {"background": 0, "a": 1}, "numTraining": n_train}))
    return src


def test_convert_degrade_is_reproducible_and_recorded(tmp_path):
    src = small_source(tmp_path, 3, 1)
    deg = Degradation("denoise", noise="rician", level=0.05)
    a = convert_degrade(src, 911, "A", deg, seed=7, output_root=tmp_path / "out")
    b = convert_degrade(src, 912, "B", deg, seed=7, output_root=tmp_path / "out")
    c = convert_degrade(src, 913, "C", deg, seed=8, output_root=tmp_path / "out")
    ds = json.loads((a / "dataset.json").read_text())
    assert ds["channel_names"] == {"0": "noNorm", "1": "noNorm"} and ds["restoration"]["seed"] == 7
    assert ds["restoration"]["task"] == "denoise" and ds["restoration"]["level"] == 0.05
    rec = json.loads((a / "degradation.json").read_text())["cases"]
    assert len(rec) == 4 and all("sigma" in r and "rng_entropy" in r for r in rec.values())

    def arr(d, n):
        return sitk.GetArrayFromImage(sitk.ReadImage(str(d / "imagesTr" / n)))
    for f in sorted((a / "imagesTr").glob("*_0000.nii.gz")):
        assert np.array_equal(arr(a, f.name), arr(b, f.name)) and not np.array_equal(arr(a, f.name), arr(c, f.name))
        clean = arr(a, f.name.replace("_0000", "_0001"))
        case = f.name[:-len("_0000.nii.gz")]
        src_img = sitk.ReadImage(str(src / "imagesTr" / f.name))
        assert np.array_equal(clean, sitk.GetArrayFromImage(src_img).astype(np.float32))
        assert sitk.ReadImage(str(a / "labelsTr" / f"{case}.nii.gz")).GetSpacing() == src_img.GetSpacing()
    assert (a / "cleanTs").is_dir() and len(list((a / "imagesTs").glob("*_0000.nii.gz"))) == 1
    with pytest.raises(FileExistsError):
        convert_degrade(src, 911, "A", deg, seed=7, output_root=tmp_path / "out")


def test_bad_inputs_give_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown degradation task"):
        Degradation("deblur")
    with pytest.raises(FileNotFoundError, match="imagesTr"):
        convert_degrade(tmp_path, 914, "X", Degradation("sr"), output_root=tmp_path / "out")
    src = small_source(tmp_path, 1, 0)
    with pytest.raises(FileNotFoundError, match="channel 0003"):
        convert_degrade(src, 915, "X", Degradation("sr"), channel=3, output_root=tmp_path / "out")


# --- end to end through the stock CLI (slow) -----------------------------------------------------------------------
def _exe(name):
    return str(Path(sys.executable).with_name(name))


def _run(cmd, env, timeout=900):
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"{' '.join(cmd)}\nSTDOUT:\n{out.stdout[-3000:]}\nSTDERR:\n{out.stderr[-3000:]}"
    return out.stdout


@pytest.mark.slow
def test_restoration_end_to_end_on_cpu(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "nnUNet_extTrainer"}
    env.update(nnUNet_raw=str(tmp_path / "raw"), nnUNet_preprocessed=str(tmp_path / "pre"),
               nnUNet_results=str(tmp_path / "res"), nnUNet_def_n_proc="1", nnUNet_compile="f", PYTHONUNBUFFERED="1")
    src = small_source(tmp_path / "src", 8, 2)
    _run([_exe("nnunet-mamba"), "convert", "degrade", str(src), "denoise", "--noise", "gaussian", "--level", "0.1",
          "-d", "916", "--name", "HippoNoisy", "--seed", "1", "-o", str(tmp_path / "raw")], env)
    ds = tmp_path / "raw" / "Dataset916_HippoNoisy"
    _run([_exe("nnUNetv2_plan_and_preprocess"), "-d", "916", "-c", "3d_fullres", "-np", "1", "-npfp", "1",
          "--verify_dataset_integrity"], env)
    tr = "MambaRestorationTrainer_ci"
    _run([_exe("nnUNetv2_train"), "916", "3d_fullres", "0", "-tr", tr, "-device", "cpu"],
         dict(env, nnUNet_n_proc_DA="0"))
    model = tmp_path / "res" / ds.name / f"{tr}__nnUNetPlans__3d_fullres"
    fold = model / "fold_0"
    ckpt = torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert ckpt["current_epoch"] == 3 and all(np.isfinite(ckpt["logging"]["train_losses"]))
    assert len(ckpt["logging"]["val_psnr"]) == 3 and any(".mixer.ssm.A_log" in k for k in ckpt["network_weights"])
    assert len(ckpt["logging"]["val_ssim"]) == 3 and all(0 < v <= 1 for v in ckpt["logging"]["val_ssim"])
    assert (fold / "progress.png").stat().st_size > 10_000  # losses, PSNR and SSIM curves
    summary = json.loads((fold / "validation" / "summary.json").read_text())
    val = summary["metric_per_case"]
    assert len(val) == 2 and all(r["reference"] == "raw" for r in val)
    for r in val:  # the degraded input's scores are recomputed here from the raw files
        clean = sitk.GetArrayFromImage(sitk.ReadImage(str(ds / "imagesTr" / f"{r['case']}_0001.nii.gz")))
        noisy = sitk.GetArrayFromImage(sitk.ReadImage(str(ds / "imagesTr" / f"{r['case']}_0000.nii.gz")))
        restored = sitk.GetArrayFromImage(sitk.ReadImage(str(fold / "validation" / f"{r['case']}.nii.gz")))
        assert r["degraded"]["PSNR"] == pytest.approx(metrics.psnr(clean, noisy), abs=1e-6)
        assert r["restored"]["PSNR"] == pytest.approx(metrics.psnr(clean, restored), abs=1e-4)
        assert (fold / "validation" / "png" / f"{r['case']}.png").stat().st_size > 1000
    # restore held-out degraded images (the _0000 files only)
    out = tmp_path / "restored"
    log = _run([_exe("nnunet-mamba"), "restore", "-i", str(ds / "imagesTs"), "-o", str(out), "-m", str(model),
                "-f", "0", "-device", "cpu"], env)
    assert "restored 2 image(s)" in log
    for f in sorted((ds / "cleanTs").glob("*.nii.gz")):
        ref, got = sitk.ReadImage(str(ds / "imagesTs" / f.name.replace(".nii.gz", "_0000.nii.gz"))), \
            sitk.ReadImage(str(out / f.name))
        assert got.GetSize() == ref.GetSize() and np.allclose(got.GetSpacing(), ref.GetSpacing())
        assert np.allclose(got.GetOrigin(), ref.GetOrigin()) and np.allclose(got.GetDirection(), ref.GetDirection())
        clean = sitk.GetArrayFromImage(sitk.ReadImage(str(f)))
        restored = sitk.GetArrayFromImage(got)
        # zero-mean noise and a barely trained residual: still the clean image's intensity scale, not [0, 1]
        assert abs(restored.mean() - clean.mean()) < 0.25 * clean.mean()
        assert np.isfinite(metrics.psnr(clean, restored))
    # the same model with its output layer zeroed is the identity: restore must give back the input exactly
    identity = tmp_path / "identity_model"
    shutil.copytree(model, identity)
    ck_path = identity / "fold_0" / "checkpoint_final.pth"
    ck = torch.load(ck_path, map_location="cpu", weights_only=False)
    last = max(int(k.split(".")[2]) for k in ck["network_weights"] if k.startswith("decoder.seg_layers."))
    for k in (f"decoder.seg_layers.{last}.weight", f"decoder.seg_layers.{last}.bias"):
        ck["network_weights"][k].zero_()
    torch.save(ck, ck_path)
    _run([_exe("nnunet-mamba"), "restore", "-i", str(ds / "imagesTs"), "-o", str(tmp_path / "identity_out"),
          "-m", str(identity), "-device", "cpu"], env)
    for f in sorted((ds / "imagesTs").glob("*_0000.nii.gz")):
        degraded = sitk.GetArrayFromImage(sitk.ReadImage(str(f)))
        same = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "identity_out" / f.name.replace("_0000", ""))))
        assert np.allclose(same, degraded, rtol=0, atol=1e-4 * np.abs(degraded).max())
    # wrong input: a clean channel in the folder
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x_0001.nii.gz").write_bytes(next((ds / "imagesTr").glob("*_0001.nii.gz")).read_bytes())
    bad = subprocess.run([_exe("nnunet-mamba"), "restore", "-i", str(tmp_path / "bad"), "-o", str(tmp_path / "o2"),
                          "-m", str(model), "-device", "cpu"], env=env, capture_output=True, text=True)
    assert bad.returncode == 2 and "x_0001.nii.gz" in bad.stderr and "channel 0000" in bad.stderr
