"""``nnunet-mamba check-input``: are these images valid inputs for this trained model? (nothing is predicted)

Checks what ``nnUNetv2_predict`` would trip over: channel files per case, unreadable or truncated images,
channels of a case on different voxel grids, and checkpoints that do not fit the network the trainer builds
with this installation. Every problem is listed with its file.
"""
from __future__ import annotations

import json
import os

from .model_args import add_model_arguments


def add_parser(sub) -> None:
    p = sub.add_parser("check-input", help="check prediction inputs (and the model's checkpoints) before predicting",
                       description=__doc__)
    p.add_argument("-i", "--input", required=True, help="folder of images named <case>_<XXXX><file_ending>")
    add_model_arguments(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from nnunet_mamba.input_checks import (InputError, check_prediction_inputs, checkpoint_problems,
                                           training_image_ndim)

    dataset_json_file = os.path.join(args.model, "dataset.json")
    if not os.path.isfile(dataset_json_file):
        raise FileNotFoundError(f"{args.model}: not a trained model folder (no dataset.json)")
    with open(dataset_json_file) as f:
        dataset_json = json.load(f)
    plans_file = os.path.join(args.model, "plans.json")
    ndim = None
    if os.path.isfile(plans_file):
        with open(plans_file) as f:
            ndim = training_image_ndim(json.load(f))
    check_prediction_inputs(args.input, dataset_json, ndim)

    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    predictor = nnUNetPredictor(device=torch.device("cpu"), verbose=False)
    folds = [f if f == "all" else int(f) for f in args.folds] if args.folds else None
    predictor.initialize_from_trained_model_folder(args.model, folds, args.checkpoint)
    folds = folds if folds is not None else predictor.auto_detect_available_folds(args.model, args.checkpoint)
    files = [os.path.join(args.model, f"fold_{f}", args.checkpoint) for f in folds]
    problems = checkpoint_problems(predictor.network, predictor.list_of_parameters, files, predictor.trainer_name)
    if problems:
        raise InputError(problems, "trained model")
    print(f"ok: inputs in {args.input} fit {args.model} ({len(files)} checkpoint(s))")
    return 0
