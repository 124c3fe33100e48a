"""``nnunet-mamba submit brats``: nnU-Net predictions (or a model to run) -> a challenge-ready folder + zip."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser("submit", help="turn predictions into a challenge submission (naming, labels, manifest, zip)")
    ch = p.add_subparsers(dest="challenge", required=True)
    b = ch.add_parser("brats", help="BraTS 2021 / 2023+ (labels and file names of the converted dataset)")
    src = b.add_mutually_exclusive_group(required=True)
    src.add_argument("-i", "--predictions", help="folder of nnU-Net predictions (<case>.nii.gz)")
    src.add_argument("-m", "--model", help="trained model folder or exported zip: run prediction on --images first")
    b.add_argument("--images", help="nnU-Net images (<case>_000X.nii.gz) the predictions come from: geometry is "
                                    "checked against them and copied (needed with -m)")
    b.add_argument("-d", "--dataset", help="dataset id or name under $nnUNet_raw, or a dataset.json path",
                   required=True)
    b.add_argument("-o", "--output", required=True, help="submission folder; OUTPUT.zip is written next to it")
    b.add_argument("-f", "--folds", nargs="+", default=["0"], help="with -m: folds to ensemble (default 0)")
    b.add_argument("-device", default="cuda", help="with -m: cuda or cpu")
    b.add_argument("--overwrite", action="store_true")
    b.add_argument("--allow-missing", action="store_true",
                   help="submit even if some --images cases have no prediction (they are listed in the manifest)")
    b.set_defaults(func=run_brats)


def _dataset_json(arg: str) -> Path:
    if arg.endswith(".json"):
        return Path(arg)
    raw = os.environ.get("nnUNet_raw")
    if not raw:
        raise RuntimeError("nnUNet_raw is not set: export it or pass the dataset.json path to -d")
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name
    return Path(raw) / maybe_convert_to_dataset_name(arg) / "dataset.json"


def run_brats(args) -> int:
    from nnunet_mamba.dataset_conversion.submission import predict_with_model, submit_brats
    ds = _dataset_json(args.dataset)
    if not ds.is_file():
        raise FileNotFoundError(f"{ds}: no dataset.json for dataset {args.dataset}")
    if args.model:
        if not args.images:
            raise ValueError("-m needs --images: the nnU-Net images to predict")
        folds = [f if f == "all" else int(f) for f in args.folds]
        with tempfile.TemporaryDirectory(prefix="nnunet_mamba_pred_") as pred:
            predict_with_model(Path(args.model), Path(args.images), folds, Path(pred), args.device)
            out, z = submit_brats(pred, args.output, ds, args.images, args.overwrite, lambda s: print(s, flush=True),
                                  args.allow_missing)
    else:
        out, z = submit_brats(args.predictions, args.output, ds, args.images, args.overwrite,
                              lambda s: print(s, flush=True), args.allow_missing)
    print(f"wrote {out} and {z}")
    return 0
