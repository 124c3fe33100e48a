"""Restoration on real MRI: the CPU side of benchmarks/gpu_restoration.sh.

  python benchmarks/restoration_report.py unseen --out .gpu_data/restoration_unseen
      before the GPU run: the unseen inputs (FLAIR of the 3 MS-lesion cases, the 3 DICOM hippocampus crops) degraded
      exactly as the training data (Rician, 5 % or --level, seed 0): <case>_0000.nii.gz + clean/<case>.nii.gz (~11 MB)
  python benchmarks/restoration_report.py ceiling --result benchmarks/results/restoration_10epochs_bf16
      adds the estimated denoising ceiling (what the clean images' own noise leaves reachable) to an earlier
      report: ceiling.json and a section of report.md (newer reports have it already)
  python benchmarks/restoration_report.py report --gpu DIR [--out benchmarks/results/restoration]
      after it: DIR holds the files the GPU run returned (<trainer>_val.tgz, <trainer>_unseen.tgz, logs.tgz). The
      degraded/clean validation pairs are regenerated from the clean MSD files with the recorded seed (and checked
      against the PSNRs the GPU computed); the classical baseline (NLM, cubic interpolation or CS-TV, its parameter
      tuned on training cases) runs here. Writes report.md, restoration.json and PNGs.
"""
from __future__ import annotations

import argparse
import json
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from nnunet_mamba.restoration import metrics
from nnunet_mamba.restoration.baselines import NLM_PARAMS, cs_tv_reconstruct, nlm_denoise, sr_cubic
from nnunet_mamba.restoration.degradations import Degradation, case_rng, measured_kspace, robust_max
from nnunet_mamba.restoration.figures import save_panel

SHARED = Path("/work/shared/data")
MS = SHARED / "Dataset501_MSLesionLesjakMNI" / "imagesTr"
DICOM = SHARED / "hippocrop_dicom_tcia"
HIPPO = SHARED / "Task04_Hippocampus" / "imagesTr"
DEGRADATION = Degradation("denoise", noise="rician", level=0.05)
SEED = 0
N_VAL_PANELS = 3
NLM_H_FACTORS = (0.1, 0.15, 0.2, 0.3, 0.4, 0.6, 0.8, 1.0)
TV_WEIGHTS = (0.005, 0.01, 0.02, 0.03, 0.05)  # CS-TV weight / robust maximum of the zero-filled image


def _array(path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path))).astype(np.float32)


def unseen_sources() -> dict[str, sitk.Image]:
    out = {}
    for f in sorted(MS.glob("*_0000.nii.gz")):  # channel 0 = FLAIR
        out[f"ms_{f.name.split('_')[1]}_flair"] = sitk.ReadImage(str(f))
    reader = sitk.ImageSeriesReader()
    for d in sorted(p for p in DICOM.glob("Study*/*") if p.is_dir()):
        ids = reader.GetGDCMSeriesIDs(str(d))
        if not ids:
            raise FileNotFoundError(f"{d}: no DICOM series")
        reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(d), ids[0]))
        out[f"dicom_{d.parent.name.lower()}"] = reader.Execute()
    return out


def make_unseen(out: Path, deg: Degradation = DEGRADATION, seed: int = SEED) -> None:
    (out / "clean").mkdir(parents=True, exist_ok=True)
    record = {**deg.describe(), "seed": seed, "cases": {}}
    for case, img in unseen_sources().items():
        clean = sitk.GetArrayFromImage(img).astype(np.float32)
        rng, entropy = case_rng(seed, case)
        degraded, drawn = deg.apply(clean, img.GetSpacing()[::-1], rng)
        for arr, path in ((degraded, out / f"{case}_0000.nii.gz"), (clean, out / "clean" / f"{case}.nii.gz")):
            im = sitk.GetImageFromArray(arr)
            im.CopyInformation(img)
            sitk.WriteImage(im, str(path), True)
        record["cases"][case] = {"rng_entropy": entropy, **drawn, "shape": list(clean.shape)}
        print(f"{case}: {clean.shape}, sigma {drawn['sigma']:.4g}")
    (out / "degradation.json").write_text(json.dumps(record, indent=1))


def _unpack(gpu: Path) -> Path:
    tmp = Path(tempfile.mkdtemp(prefix="restoration_report_"))
    for t in sorted(gpu.glob("*.tgz")):
        with tarfile.open(t) as tar:
            tar.extractall(tmp, filter="data")
    return tmp


def _label(trainer: str) -> str:
    return "NoMamba" if trainer.startswith("NoMamba") else "Mamba"


def _stats(rows: list[dict], method: str) -> dict:
    out = {}
    for m in ("PSNR", "SSIM"):
        v = np.array([r[method][m] for r in rows])
        out[m] = {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if len(v) > 1 else 0.0}
    return out


# the tuned parameter of each task's classical baseline: (result key, grid)
TUNED = {"denoise": ("h_over_sigma", NLM_H_FACTORS), "kspace": ("weight_over_robust_max", TV_WEIGHTS)}


def tune_baseline(deg: Degradation, seed: int, exclude: set, n: int = 6) -> dict | None:
    """The classical baseline's parameter (NLM's h / sigma, CS-TV's weight) chosen on ``n`` training cases (never
    validation cases): the best mean PSNR. None for a baseline without one (cubic interpolation)."""
    if deg.task not in TUNED:
        return None
    key, grid = TUNED[deg.task]
    cases = [f for f in sorted(HIPPO.glob("*.nii.gz")) if f.name[:-len(".nii.gz")] not in exclude][:n]
    pairs = []
    for f in cases:
        img = sitk.ReadImage(str(f))
        clean = sitk.GetArrayFromImage(img).astype(np.float32)
        degraded, drawn = deg.apply(clean, img.GetSpacing()[::-1], case_rng(seed, f.name[:-7])[0])
        pairs.append((degraded, clean, drawn))
    scores = {v: float(np.mean([metrics.psnr(clean, baseline(deg, degraded, clean, drawn, v))
                                for degraded, clean, drawn in pairs])) for v in grid}
    best = max(scores, key=scores.get)
    print(f"{BASELINE_NAME[deg.task]} {key} on {len(cases)} training cases: {scores} -> {best}")
    return {key: best, f"mean_psnr_by_{key}": scores, "tuning_cases": [f.name for f in cases]}


BASELINE_NAME = {"denoise": "NLM", "sr": "cubic", "kspace": "CS-TV"}
CS_TV_ITERATIONS = 40


def degradation_from(info: dict) -> Degradation:
    fields = ("task", "noise", "level", "factor", "acceleration", "center_fraction")
    return Degradation(**{k: info[k] for k in fields if k in info})


def baseline(deg: Degradation, degraded, clean, drawn, param):
    """The classical method of the task: NLM (oracle sigma, h = param x sigma) for denoising, cubic-spline
    interpolation of the thick slices for through-plane SR, CS-TV from the acquired k-space (TV weight = param x the
    zero-filled image's robust maximum) for undersampled k-space."""
    if deg.task == "denoise":
        return nlm_denoise(degraded, drawn["sigma"], param)[0]
    if deg.task == "sr":
        return sr_cubic(clean, deg.factor, drawn["slice_axis"])
    mask = np.zeros(clean.shape[drawn["phase_encode_axis"]], bool)
    mask[drawn["lines_kept"]] = True
    measured = measured_kspace(clean, mask, drawn["slice_axis"])
    return cs_tv_reconstruct(measured, mask, drawn["slice_axis"], param * robust_max(degraded), CS_TV_ITERATIONS)


def _ceiling_fields(clean: np.ndarray, added_sigma: float) -> dict:
    """What the clean image's own noise leaves reachable (an estimate): its noise sigma and the PSNR bound."""
    c = metrics.noise_sigma(clean)
    return {"clean_noise_sigma_est": c, "ceiling_psnr_est": metrics.denoising_ceiling_psnr(clean, added_sigma, c)}


def evaluate(cases: dict, trainers: dict, panels: set, out: Path, tag: str, deg: Degradation,
             param: float | None) -> list[dict]:
    """cases: case -> (degraded, clean, what the degradation drew); trainers: label -> folder of restored
    <case>.nii.gz."""
    rows = []
    for case, (degraded, clean, drawn) in cases.items():
        row = {"case": case, "degraded": metrics.scores(clean, degraded), **({"noise_sigma": drawn["sigma"]}
                                                                             if "sigma" in drawn else {})}
        if deg.task == "denoise":
            row.update(_ceiling_fields(clean, drawn["sigma"]))
        images = {"degraded": degraded}
        base = baseline(deg, degraded, clean, drawn, param)
        if base is not None:
            row[BASELINE_NAME[deg.task]] = metrics.scores(clean, base)
            images[BASELINE_NAME[deg.task]] = base
        for label, folder in trainers.items():
            restored = _array(folder / f"{case}.nii.gz")
            row[label] = metrics.scores(clean, restored)
            images[label] = restored
        images["clean"] = clean
        rows.append(row)
        print(f"{tag} {case}: " + ", ".join(f"{k} {row[k]['PSNR']:.2f}" for k in images if k in row))
        if case in panels:
            save_panel(out / f"panel_{tag}_{case}.png", images,
                       title=f"{case}: " + "  ".join(f"{k} {row[k]['PSNR']:.1f} dB" for k in images if k in row))
    return rows


def report(gpu: Path, out: Path, unseen: Path, note: str = "") -> None:
    out.mkdir(parents=True, exist_ok=True)
    root = _unpack(gpu)
    trainer_dirs = sorted(d for d in root.iterdir() if d.is_dir() and "Restoration" in d.name)
    for d in trainer_dirs:  # packs of the first GPU run hold the validation folder's files at the top
        if not (d / "validation").is_dir() and (d / "summary.json").is_file():
            files = list(d.iterdir())
            (d / "validation").mkdir()
            for f in files:
                f.rename(d / "validation" / f.name)
    failed = [d.name for d in trainer_dirs if not (d / "validation" / "summary.json").is_file()]
    trainer_dirs = [d for d in trainer_dirs if d.name not in failed]
    if failed:
        print(f"no validation summary (training failed?): {', '.join(failed)}")
    if not trainer_dirs:
        raise FileNotFoundError(f"{gpu}: no <trainer>_val.tgz with restoration results")
    summaries = {d.name: json.loads((d / "validation" / "summary.json").read_text()) for d in trainer_dirs}
    first = next(iter(summaries.values()))
    info = first["degradation"]
    deg = degradation_from(info)
    seed = int(info["seed"])
    val_cases, gpu_degraded_psnr = {}, {}
    for r in first["metric_per_case"]:
        img = sitk.ReadImage(str(HIPPO / f"{r['case']}.nii.gz"))
        clean = sitk.GetArrayFromImage(img).astype(np.float32)
        degraded, drawn = deg.apply(clean, img.GetSpacing()[::-1], case_rng(seed, r["case"])[0])
        val_cases[r["case"]] = (degraded, clean, drawn)
        gpu_degraded_psnr[r["case"]] = r["degraded"]["PSNR"]
    labels = {_label(d.name): d for d in trainer_dirs}
    tuning = tune_baseline(deg, seed, set(val_cases))
    param = tuning[TUNED[deg.task][0]] if tuning else None
    val_rows = evaluate(val_cases, {k: d / "validation" for k, d in labels.items()},
                        set(sorted(val_cases)[:N_VAL_PANELS]), out, "val", deg, param)
    mismatch = max(abs(r["degraded"]["PSNR"] - gpu_degraded_psnr[r["case"]]) for r in val_rows)
    unseen_rows = []
    if unseen.is_dir() and deg.task == "denoise":
        level = json.loads((unseen / "degradation.json").read_text()).get("level")
        if level != deg.level:
            raise ValueError(f"{unseen}: unseen inputs degraded at level {level}, the models at {deg.level}: "
                             "pass --unseen with the matching folder")
    if deg.task == "denoise" and all((d / "unseen").is_dir() for d in trainer_dirs) and unseen.is_dir():
        restored = set.intersection(*({f.name[:-len(".nii.gz")] for f in (d / "unseen").glob("*.nii.gz")}
                                      for d in trainer_dirs))
        cases = {f.name[:-len("_0000.nii.gz")]: f for f in sorted(unseen.glob("*_0000.nii.gz"))
                 if f.name[:-len("_0000.nii.gz")] in restored}
        drawn = json.loads((unseen / "degradation.json").read_text())["cases"]
        pairs = {c: (_array(f), _array(unseen / "clean" / f"{c}.nii.gz"), drawn[c]) for c, f in cases.items()}
        unseen_rows = evaluate(pairs, {k: d / "unseen" for k, d in labels.items()}, set(pairs), out, "unseen", deg,
                               param)
    base = BASELINE_NAME[deg.task]
    methods = ["degraded", *([base] if base else []), *sorted(labels, key=lambda k: k != "NoMamba")]
    result = {"degradation": {**deg.describe(), "seed": seed}, "baseline": base,
              "nlm": {**NLM_PARAMS, **tuning} if deg.task == "denoise" else None,
              "cs_tv": {"iterations": CS_TV_ITERATIONS, **tuning} if deg.task == "kspace" else None,
              "trainers": sorted(summaries),
              "validation_cases": len(val_rows), "degraded_psnr_max_abs_diff_vs_gpu": mismatch,
              "validation_mean": {m: _stats(val_rows, m) for m in methods}, "validation": val_rows,
              "unseen": unseen_rows, "gpu_summaries_mean": {k: s["mean"] for k, s in summaries.items()}}
    (out / "restoration.json").write_text(json.dumps(result, indent=1))
    _plot(val_rows, methods, out / "psnr_ssim_validation.png")
    _markdown(result, methods, out / "report.md", note)
    print(f"wrote {out}")


def _ceiling_lines(rows: list[dict], ref: str, ref_psnr: float, methods_psnr: dict) -> list[str]:
    ceil = float(np.mean([r["ceiling_psnr_est"] for r in rows]))
    ratio = float(np.mean([r["clean_noise_sigma_est"] / r["noise_sigma"] for r in rows]))
    lines = ["", f"**Estimated ceiling: {ceil:.2f} dB.** The clean reference images are noisy themselves: their "
             f"estimated noise sigma (metrics.noise_sigma, second differences, over-estimates by ~5 %) is on average "
             f"{ratio:.2f} x the added sigma. That part of the reference can only be predicted from the degraded image "
             "by Wiener shrinkage, so even a perfect denoiser scores about "
             "`10 log10(range^2 / (c^2 a^2 / (c^2 + a^2)))` (metrics.denoising_ceiling_psnr; Gaussian model). "
             f"Room above {ref}: {ceil - ref_psnr:+.2f} dB."]
    for m, v in methods_psnr.items():
        above = sum(r[m]["PSNR"] > r["ceiling_psnr_est"] for r in rows)
        lines.append(f"- {m}: {v - ceil:+.2f} dB from the ceiling; above the estimate on {above} of {len(rows)} cases "
                     "(the estimate is approximate: correlated noise, Rician bias).")
    return lines


def add_ceiling(result_dir: Path) -> None:
    """The ceiling estimate for an earlier denoising report (its restoration.json), appended to its report.md."""
    res = json.loads((result_dir / "restoration.json").read_text())
    deg = degradation_from(res["degradation"])
    if deg.task != "denoise":
        raise ValueError(f"{result_dir}: a {deg.task} result; the ceiling is for denoising")
    seed = int(res["degradation"]["seed"])
    for r in res["validation"]:
        img = sitk.ReadImage(str(HIPPO / f"{r['case']}.nii.gz"))
        clean = sitk.GetArrayFromImage(img).astype(np.float32)
        _, drawn = deg.apply(clean, img.GetSpacing()[::-1], case_rng(seed, r["case"])[0])
        if abs(drawn["sigma"] - r["noise_sigma"]) > 1e-6 * r["noise_sigma"]:
            raise ValueError(f"{r['case']}: regenerated sigma {drawn['sigma']} != recorded {r['noise_sigma']}")
        r.update(_ceiling_fields(clean, drawn["sigma"]))
    vm = res["validation_mean"]
    trained = [m for m in vm if m not in ("degraded", res["baseline"])]
    lines = _ceiling_lines(res["validation"], res["baseline"], vm[res["baseline"]]["PSNR"]["mean"],
                           {m: vm[m]["PSNR"]["mean"] for m in trained})
    (result_dir / "ceiling.json").write_text(json.dumps(
        {"method": "metrics.denoising_ceiling_psnr with metrics.noise_sigma of each clean validation image",
         "mean_ceiling_psnr_est": float(np.mean([r["ceiling_psnr_est"] for r in res["validation"]])),
         "per_case": [{k: r[k] for k in ("case", "noise_sigma", "clean_noise_sigma_est", "ceiling_psnr_est")}
                      for r in res["validation"]]}, indent=1))
    report_md = result_dir / "report.md"
    text = report_md.read_text()
    heading = "## Ceiling (added afterwards"
    text = text.split(heading)[0].rstrip("\n")
    report_md.write_text(f"{text}\n\n{heading} on CPU from the same cases; ceiling.json)\n" + "\n".join(lines) + "\n")
    print("\n".join(lines))


def _plot(rows, methods, path):
    import matplotlib
    matplotlib.use("agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, m in zip(axes, ("PSNR", "SSIM")):
        ax.boxplot([[r[k][m] for r in rows] for k in methods])
        ax.set_xticks(range(1, len(methods) + 1), methods)
        ax.set_title(f"{m} on {len(rows)} validation cases" + (" (dB)" if m == "PSNR" else ""))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


TITLE = {"denoise": "Rician noise", "sr": "through-plane super-resolution", "kspace": "undersampled k-space"}


def _baseline_text(res) -> str:
    d = res["degradation"]
    if d["task"] == "denoise":
        return (f"NLM: scikit-image denoise_nl_means (patch {res['nlm']['patch_size']}, distance "
                f"{res['nlm']['patch_distance']}, fast mode) with sigma = each case's true noise sigma (oracle) and "
                f"h = {res['nlm']['h_over_sigma']} x sigma, the best of "
                f"{list(res['nlm']['mean_psnr_by_h_over_sigma'])} "
                f"on {len(res['nlm']['tuning_cases'])} training (not validation) cases: both choices favour NLM.")
    if d["task"] == "sr":
        return ("Degraded = thick slices (block means of factor slices) linearly interpolated back to the original "
                "slice positions; cubic = the same thick slices interpolated with a cubic spline (scipy).")
    cs = res["cs_tv"]
    return ("Degraded = zero-filled reconstruction (magnitude of the inverse FFT of the masked k-space). CS-TV: "
            f"compressed sensing, {cs['iterations']} POCS iterations alternating scikit-image's denoise_tv_chambolle "
            "(real and imaginary parts, 3D) with data consistency on the acquired lines, TV weight = "
            f"{cs['weight_over_robust_max']} x the zero-filled image's 99.5th percentile, the best of "
            f"{list(cs['mean_psnr_by_weight_over_robust_max'])} on {len(cs['tuning_cases'])} training (not validation) "
            "cases. CS-TV reads the acquired complex k-space, the networks only the zero-filled magnitude image: "
            "both favour CS-TV.")


def _markdown(res, methods, path, note=""):
    d = res["degradation"]
    vm = res["validation_mean"]
    base = res["baseline"]
    lines = [
        f"# Restoration on real MRI (Hippocampus, {TITLE[d['task']]})", "", *([f"**{note}**", ""] if note else []),
        f"Degradation: {d}" + (", sigma = level x 99.5th percentile of the clean image" if d["task"] == "denoise"
                               else "") + f". Models: "
        f"{', '.join(res['trainers'])}, fold 0 of nnU-Net's 5-fold split (see gpu_restoration.sh); metrics against "
        "the clean image in the original geometry: PSNR with the clean image's range, SSIM 3D (scikit-image, "
        "Gaussian window).",
        _baseline_text(res),
        f"Degraded pairs regenerated here from the seed; largest |PSNR difference| to the GPU's: "
        f"{res['degraded_psnr_max_abs_diff_vs_gpu']:.2e} dB.", "",
        f"## Fold-0 validation ({res['validation_cases']} cases), mean ± sd", "",
        "| method | PSNR (dB) | SSIM |", "|---|---|---|"]
    for m in methods:
        lines.append(f"| {m} | {vm[m]['PSNR']['mean']:.2f} ± {vm[m]['PSNR']['sd']:.2f} | "
                     f"{vm[m]['SSIM']['mean']:.4f} ± {vm[m]['SSIM']['sd']:.4f} |")
    ref = base or "degraded"
    for m in methods[methods.index(ref) + 1:]:
        gain = vm[m]["PSNR"]["mean"] - vm[ref]["PSNR"]["mean"]
        target = f" (target ≥ +2 dB: {'met' if gain >= 2 else 'NOT met'})" if d["task"] == "denoise" else ""
        lines.append(f"\n{m} - {ref}: {gain:+.2f} dB PSNR{target}.")
    if d["task"] == "denoise":
        lines += _ceiling_lines(res["validation"], ref, vm[ref]["PSNR"]["mean"],
                                {m: vm[m]["PSNR"]["mean"] for m in methods[methods.index(ref) + 1:]})
    if res["unseen"]:
        lines += ["", "## Unseen inputs (not in training; same synthetic degradation)", "",
                  "| case | " + " | ".join(f"{m} PSNR / SSIM" for m in methods) + " |",
                  "|---|" + "---|" * len(methods)]
        for r in res["unseen"]:
            lines.append(f"| {r['case']} | " + " | ".join(f"{r[m]['PSNR']:.2f} / {r[m]['SSIM']:.3f}"
                                                          for m in methods) + " |")
    lines += ["", "Figures: psnr_ssim_validation.png, panel_*.png (middle slice; second row |error|)."]
    path.write_text("\n".join(lines) + "\n")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    u = sub.add_parser("unseen")
    u.add_argument("--out", default=".gpu_data/restoration_unseen")
    u.add_argument("--level", type=float, default=DEGRADATION.level, help="Rician noise level (as convert degrade)")
    r = sub.add_parser("report")
    r.add_argument("--gpu", required=True)
    r.add_argument("--out", default="benchmarks/results/restoration")
    r.add_argument("--unseen", default=".gpu_data/restoration_unseen", help="the folder `unseen` wrote")
    r.add_argument("--note", default="", help="a line at the top of report.md (e.g. what kind of run this was)")
    c = sub.add_parser("ceiling")
    c.add_argument("--result", required=True, type=Path, help="a denoising report folder (restoration.json)")
    a = p.parse_args(argv)
    if a.cmd == "unseen":
        make_unseen(Path(a.out), Degradation("denoise", noise="rician", level=a.level))
    elif a.cmd == "ceiling":
        add_ceiling(a.result)
    else:
        report(Path(a.gpu), Path(a.out), Path(a.unseen), a.note)


if __name__ == "__main__":
    main()
