"""``nnunet-mamba restore -i IMAGES -o OUT -m MODEL_FOLDER``: restore degraded images with a trained restorer.

Inputs: only the degraded images, ``<case>_0000<ending>`` or ``<case><ending>`` (the model's file ending).
Each is preprocessed as in training (nnU-Net's cropping and resampling to the plans' spacing), restored with
sliding windows (an average over the given folds), put back into the input's grid and intensity scale and
written as ``OUT/<case><ending>`` (float32, the input's spacing/origin/direction), each file atomically.
"""
from __future__ import annotations

import re
from pathlib import Path

from .model_args import add_model_arguments

_CHANNEL = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


def add_parser(sub) -> None:
    p = sub.add_parser("restore", help="restore degraded images with a trained restoration model",
                       description=__doc__.split("\n\n", 1)[1])
    p.add_argument("-i", "--input", required=True, help="folder of degraded images")
    p.add_argument("-o", "--output", required=True, help="output folder (created)")
    add_model_arguments(p)
    p.add_argument("-device", "--device", choices=["cpu", "cuda"], default=None,
                   help="default: cuda when available")
    p.add_argument("--disable-mirroring", action="store_true", help="no test-time mirroring even if trained with it")
    p.set_defaults(func=run)


def find_inputs(folder: Path, ending: str) -> dict[str, Path]:
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: not a folder")
    cases: dict[str, Path] = {}
    for f in sorted(folder.iterdir()):
        if f.name.startswith(".") or not f.is_file():
            continue
        if not f.name.endswith(ending):
            continue
        stem = f.name[: -len(ending)]
        m = _CHANNEL.match(stem)
        if m and m.group("channel") != "0000":
            raise ValueError(f"{f}: restoration takes the degraded image only (channel 0000); remove the other "
                             f"channels from {folder}")
        case = m.group("case") if m else stem
        if case in cases:
            raise ValueError(f"{f}: case {case!r} given twice (also {cases[case].name})")
        cases[case] = f
    if not cases:
        raise FileNotFoundError(f"{folder}: no images ending in {ending} (the model's file ending)")
    return cases


def load_model(model: Path, folds, checkpoint: str, device):
    from batchgenerators.utilities.file_and_folder_operations import load_json
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
    import nnunet_mamba.trainers as trainers
    from nnunet_mamba.checkpoints import model_folds, read_checkpoint
    from nnunet_mamba.trainers.restoration import MambaRestorationTrainer, restoration_info

    for name in ("plans.json", "dataset.json"):
        if not (model / name).is_file():
            raise FileNotFoundError(f"{model / name}: missing; -m takes a trained model folder "
                                    "(<trainer>__<plans>__<configuration>)")
    dataset_json = load_json(str(model / "dataset.json"))
    restoration_info(dataset_json, str(model / "dataset.json"))
    plans_manager = PlansManager(str(model / "plans.json"))
    weights, trainer_cls, configuration, mirror_axes = [], None, None, None
    for fold in model_folds(model, checkpoint, folds):
        path = model / f"fold_{fold}" / checkpoint
        ckpt = read_checkpoint(path)
        cls = getattr(trainers, ckpt.get("trainer_name", ""), None)
        if cls is None or not issubclass(cls, MambaRestorationTrainer):
            raise ValueError(f"{path}: written by {ckpt.get('trainer_name')!r}, not a restoration trainer")
        trainer_cls, configuration = cls, ckpt["init_args"]["configuration"]
        mirror_axes = ckpt.get("inference_allowed_mirroring_axes")
        weights.append(ckpt["network_weights"])
    configuration_manager = plans_manager.get_configuration(configuration)
    network = trainer_cls.build_network_architecture(plans_manager, configuration_manager, 1, 1, False)
    return network, weights, plans_manager, configuration_manager, dataset_json, mirror_axes


def run(args) -> int:
    import numpy as np
    import torch
    from nnunet_mamba.restoration.inference import (make_predictor, restore_preprocessed, to_original_geometry,
                                                    write_image)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("-device cuda: no CUDA device available")
    model = Path(args.model)
    network, weights, pm, cm, dataset_json, mirror_axes = load_model(model, args.folds, args.checkpoint, device)
    ending = dataset_json["file_ending"]
    inputs = find_inputs(Path(args.input), ending)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    predictor = make_predictor(network, pm, cm, dataset_json, None if args.disable_mirroring else mirror_axes,
                               device)
    preprocessor = cm.preprocessor_class(verbose=False)
    for i, (case, path) in enumerate(inputs.items()):
        try:
            data, _, props = preprocessor.run_case([str(path)], None, pm, cm, dataset_json)
        except Exception as e:
            raise ValueError(f"{path}: cannot be read/preprocessed ({type(e).__name__}: {str(e)[:200]})") from None
        if data.shape[0] != 1:
            raise ValueError(f"{path}: has {data.shape[0]} channels; restoration takes one degraded image")
        restored = None
        for w in weights:
            network.load_state_dict(w)
            r = restore_preprocessed(predictor, data)
            restored = r if restored is None else restored + r
        restored = restored / len(weights)
        image = to_original_geometry(restored, props, pm, cm)
        write_image(image, props, out / f"{case}{ending}")
        print(f"[{i + 1}/{len(inputs)}] {case}: mean {float(np.mean(image)):.4g} -> {out / (case + ending)}",
              flush=True)
    print(f"restored {len(inputs)} image(s) into {out} with {len(weights)} fold(s) of {model.name}")
    return 0
