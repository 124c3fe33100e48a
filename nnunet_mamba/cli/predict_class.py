"""``nnunet-mamba predict-class``: per-case class probabilities from a trained classifier model folder."""
from __future__ import annotations

from pathlib import Path

from .model_args import add_model_arguments


def add_parser(sub) -> None:
    p = sub.add_parser("predict-class", help="classify images with a trained MambaClassifierTrainer model",
                       description="Images named like nnU-Net's (<case>_0000.nii.gz, ...) are preprocessed with the "
                                   "model's plans; probabilities are averaged over the folds. The CSV has one row per "
                                   "case: case, p_<class>..., predicted_class (name), predicted_index.")
    p.add_argument("-i", "--input", required=True, help="folder of images <case>_<XXXX><file_ending>")
    p.add_argument("-o", "--output", required=True, help="CSV file to write")
    add_model_arguments(p)
    p.add_argument("-device", default="cuda", choices=["cuda", "cpu"])
    p.set_defaults(func=run)


def run(args) -> int:
    import torch
    from nnunet_mamba.classification.outputs import write_predictions_csv
    from nnunet_mamba.classification.predict import ClassifierModel, find_cases

    device = args.device
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("-device cuda: no CUDA device available (use -device cpu)")
    out = Path(args.output)
    if not out.parent.is_dir():
        raise FileNotFoundError(f"{out.parent}: output folder does not exist")
    model = ClassifierModel.from_folder(args.model, args.folds, args.checkpoint, device)
    channels = len(model.dataset_json["channel_names"])
    cases = find_cases(args.input, model.dataset_json["file_ending"], channels)
    print(f"{len(cases)} case(s), {len(model.networks)} fold(s), classes {model.class_names}", flush=True)
    names, probs = model.predict_cases(cases, progress=lambda d, n: print(f"classified {d}/{n}", flush=True))
    write_predictions_csv(str(out), names, probs, model.class_names)
    print(f"wrote {out}")
    return 0
