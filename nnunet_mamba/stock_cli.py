"""Clear errors from the stock ``nnUNetv2_*`` commands, without forking nnU-Net.

Installed at interpreter start-up by :mod:`nnunet_mamba._autoload`, only in processes whose program is an
``nnUNetv2_*`` console script:

* an exception hook: a failing command prints one message (what went wrong, naming the file, and what to do)
  instead of a traceback; the full traceback goes to a file whose path is printed.
  ``NNUNET_MAMBA_TRACEBACK=1`` shows the traceback as usual.
* for ``nnUNetv2_predict*``: before nnU-Net reads or writes anything, the input images are checked
  (:func:`nnunet_mamba.input_checks.check_prediction_inputs`: channel files, unreadable or truncated files,
  channels on different grids) and the loaded checkpoints are checked against the network the trainer builds.
  nnU-Net alone would fail in a background worker ("Background workers died"), or, for a truncated .nii.gz,
  silently predict on garbage.

Opt out of all of it with ``NNUNET_MAMBA_NO_AUTOLOAD=1``.
"""
from __future__ import annotations

import difflib
import functools
import glob
import importlib.abc
import os
import pickle
import re
import sys
import tempfile
import traceback

_PREDICTOR_MODULE = "nnunetv2.inference.predict_from_raw_data"


def program() -> str:
    return os.path.basename(sys.argv[0]) if getattr(sys, "argv", None) else ""


def install() -> None:
    """Called from the start-up hook; cheap (no torch / nnU-Net import)."""
    prog = program()
    if not prog.startswith("nnUNetv2_"):
        return
    if sys.excepthook is sys.__excepthook__ and os.environ.get("NNUNET_MAMBA_TRACEBACK", "") not in ("1", "true"):
        sys.excepthook = _excepthook
    if prog.startswith("nnUNetv2_predict"):
        sys.meta_path.insert(0, _PatchOnImport(_PREDICTOR_MODULE, patch_predictor))


# --- one clear message per failure -------------------------------------------------------------------------

def _excepthook(exc_type, exc, tb) -> None:
    if issubclass(exc_type, KeyboardInterrupt):
        return sys.__excepthook__(exc_type, exc, tb)
    try:
        log = _save_traceback(exc_type, exc, tb)
        message = explain(exc)
    except Exception:  # never hide the original error behind a bug of ours
        return sys.__excepthook__(exc_type, exc, tb)
    print(f"\n{program()}: error: {message}\n(full traceback: {log}; NNUNET_MAMBA_TRACEBACK=1 prints it)",
          file=sys.stderr)


def _save_traceback(exc_type, exc, tb) -> str:
    fd, path = tempfile.mkstemp(prefix=f"{program()}_error_", suffix=".txt")
    with os.fdopen(fd, "w") as f:
        f.write(" ".join(sys.argv) + "\n\n")
        traceback.print_exception(exc_type, exc, tb, file=f)
    return path


def explain(exc: BaseException) -> str:
    """The exception's message plus what to do, for the mistakes users make with the stock commands."""
    text = str(exc).strip() or type(exc).__name__
    from nnunet_mamba.input_checks import InputError
    if isinstance(exc, InputError):
        return f"{text}\nNothing was predicted or written."
    if isinstance(exc, FileNotFoundError) and exc.filename:
        return _missing_file(exc.filename)
    m = re.search(r"Could not find requested nnunet trainer (\S+)", text)
    if m:
        return _unknown_trainer(m.group(1))
    if "Requested configuration" in text and "not found in plans" in text:
        return (f"{text}. Pass one of those with the configuration argument, or plan the missing one: "
                "nnUNetv2_plan_and_preprocess -d ID -c <configuration>")
    if "Could not find a dataset with the ID" in text:
        return text.replace("\n", " ") + " (converters: nnunet-mamba convert --help)"
    if re.search(r"not compiled with CUDA|no NVIDIA driver|CUDA driver|No CUDA GPUs are available", text):
        return f"{text.splitlines()[0]}: this machine has no usable CUDA GPU; add -device cpu (slow) or run on a GPU"
    if "Error(s) in loading state_dict" in text:
        return ("the checkpoint's weights do not fit the network this trainer builds (another trainer, other plans "
                "or another nnunet-mamba version): "
                f"{text.splitlines()[1].strip()[:300] if len(text.splitlines()) > 1 else ''}")
    return f"{type(exc).__name__}: {text}"


def _missing_file(path: str) -> str:
    path = os.path.abspath(path)
    parent, name = os.path.dirname(path), os.path.basename(path)
    if name.endswith(".json") and os.path.basename(os.path.dirname(parent)) != "" and \
            os.environ.get("nnUNet_preprocessed") and \
            path.startswith(os.path.abspath(os.environ["nnUNet_preprocessed"])):
        plans = sorted(os.path.basename(p)[:-5] for p in glob.glob(os.path.join(parent, "*Plans*.json")))
        return (f"{path}: no such plans file. Plans of this dataset: {', '.join(plans) or 'none'} (pass one with -p), "
                "or create it: nnUNetv2_plan_and_preprocess / nnunet-mamba plan")
    if name.startswith("checkpoint") and name.endswith(".pth"):
        fold_dir = parent
        there = sorted(os.path.basename(p) for p in glob.glob(os.path.join(fold_dir, "checkpoint*.pth")))
        model = os.path.dirname(fold_dir)
        folds = sorted(os.path.basename(p) for p in glob.glob(os.path.join(model, "fold_*"))
                       if glob.glob(os.path.join(p, name)))
        return (f"{path}: no such checkpoint (training of {os.path.basename(fold_dir)} unfinished or never started). "
                f"In that fold: {', '.join(there) or 'no checkpoint'} (pick one with -chk); folds that have {name}: "
                f"{', '.join(folds) or 'none'} (pick with -f)")
    m = re.fullmatch(r"(.+)_(2d|3d_fullres|3d_lowres|3d_cascade_fullres)", name)
    if m and os.environ.get("nnUNet_preprocessed") and path.startswith(
            os.path.abspath(os.environ["nnUNet_preprocessed"])):
        dataset = os.path.basename(parent)
        return (f"{path}: the dataset is not preprocessed for {m.group(2)}; run nnUNetv2_plan_and_preprocess -d "
                f"{dataset[7:10] if dataset.startswith('Dataset') else dataset} -c {m.group(2)} "
                f"(or nnUNetv2_preprocess with -plans_name {m.group(1)}) first")
    model = parent if name in ("dataset.json", "plans.json") else None
    if model is not None and not os.path.isdir(model):
        dataset_dir = os.path.dirname(model)
        trained = sorted(os.path.basename(p) for p in glob.glob(os.path.join(dataset_dir, "*__*__*")))
        return (f"{model}: no trained model there (trainer__plans__configuration). Models of "
                f"{os.path.basename(dataset_dir)}: {', '.join(trained) or 'none'}; pass the matching -tr, -p and -c")
    return f"{path}: no such file or folder"


def _unknown_trainer(name: str) -> str:
    try:
        from nnunet_mamba import trainers
        ours = list(trainers.__all__)
    except Exception:
        ours = []
    close = difflib.get_close_matches(name, ours, n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    return (f"no trainer class named {name!r} (nnU-Net's own trainers and nnunet-mamba's were searched).{hint} "
            "List ours with: python -c \"import nnunet_mamba.trainers as t; print(t.__all__)\"")


# --- checks before prediction ------------------------------------------------------------------------------

class _PatchOnImport(importlib.abc.MetaPathFinder):
    """Runs ``patch(module)`` right after ``name`` is imported; then removes itself."""

    def __init__(self, name, patch):
        self.name, self.patch = name, patch

    def find_spec(self, fullname, path, target=None):
        if fullname != self.name:
            return None
        sys.meta_path.remove(self)
        import importlib.util
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        loader, patch = spec.loader, self.patch

        class _Loader(importlib.abc.Loader):
            def create_module(self, s):
                return loader.create_module(s)

            def exec_module(self, module):
                loader.exec_module(module)
                patch(module)

        spec.loader = _Loader()
        return spec


def _unreadable_checkpoints(files) -> list[str]:
    from nnunet_mamba.checkpoints import read_checkpoint

    problems = []
    for f in files:
        try:
            read_checkpoint(f)
        except (RuntimeError, ValueError, FileNotFoundError) as e:
            problems.append(f"{e}; copy it again or retrain that fold")
    return problems


def patch_predictor(module) -> None:
    """Wrap nnUNetPredictor so that inputs and checkpoints are checked before any work or output."""
    from nnunet_mamba.input_checks import (InputError, check_prediction_inputs, checkpoint_problems,
                                           training_image_ndim)

    cls = module.nnUNetPredictor
    original_init, original_predict = cls.initialize_from_trained_model_folder, cls.predict_from_files

    @functools.wraps(original_init)
    def initialize_from_trained_model_folder(self, model_training_output_dir, use_folds,
                                             checkpoint_name="checkpoint_final.pth"):
        folds = use_folds if use_folds is not None else cls.auto_detect_available_folds(model_training_output_dir,
                                                                                         checkpoint_name)
        files = [os.path.join(model_training_output_dir, f"fold_{f}", checkpoint_name) for f in folds]
        try:
            original_init(self, model_training_output_dir, use_folds, checkpoint_name)
        except FileNotFoundError:
            raise
        except (RuntimeError, EOFError, OSError, pickle.UnpicklingError) as e:
            unreadable = _unreadable_checkpoints(files)
            if unreadable:  # torch.load's own message does not say which file
                raise InputError(unreadable, "trained model") from None
            if "state_dict" not in str(e) or self.list_of_parameters is None:  # nnU-Net loads fold 0's weights
                raise
            trainer, net = _network_like_predictor(self, files[0])
            problems = checkpoint_problems(net, self.list_of_parameters, files, trainer)
            if problems:
                raise InputError(problems, "trained model") from None
            raise
        net = getattr(self.network, "_orig_mod", self.network)
        problems = checkpoint_problems(net, self.list_of_parameters, files, self.trainer_name)
        if problems:
            raise InputError(problems, "trained model")

    @functools.wraps(original_predict)  # nnU-Net reads this method's signature (and its own locals) to log args
    def predict_from_files(self, list_of_lists_or_source_folder, output_folder_or_list_of_truncated_output_files,
                           *args, **kwargs):
        out = output_folder_or_list_of_truncated_output_files
        try:
            check_prediction_inputs(list_of_lists_or_source_folder, self.dataset_json,
                                    training_image_ndim(self.plans_manager.plans))
        except InputError:
            if isinstance(out, str) and os.path.isdir(out) and not os.listdir(out):
                os.rmdir(out)  # nnUNetv2_predict made it just before; nothing was predicted into it
            raise
        overwrite = kwargs.get("overwrite", args[1] if len(args) > 1 else True)
        if not overwrite and isinstance(output_folder_or_list_of_truncated_output_files, str):
            remove_damaged_outputs(output_folder_or_list_of_truncated_output_files, self.dataset_json["file_ending"])
        return original_predict(self, list_of_lists_or_source_folder, output_folder_or_list_of_truncated_output_files,
                                *args, **kwargs)

    cls.initialize_from_trained_model_folder = initialize_from_trained_model_folder
    cls.predict_from_files = predict_from_files


def remove_damaged_outputs(folder: str, file_ending: str) -> list[str]:
    """Before ``--continue_prediction`` skips the cases that have an output: delete outputs that a killed run
    left half-written (nnU-Net checks only that the file exists), so those cases are predicted again."""
    import zipfile

    from nnunet_mamba.input_checks import file_damage

    removed = []
    if not os.path.isdir(folder):
        return removed
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        damaged = False
        if name.endswith(file_ending) and name.endswith(".gz"):
            damaged = file_damage(path) is not None
        elif name.endswith(".npz"):
            try:
                with zipfile.ZipFile(path) as z:
                    damaged = z.testzip() is not None
            except (zipfile.BadZipFile, OSError):
                damaged = True
        if damaged:
            os.remove(path)
            removed.append(path)
            print(f"nnunet-mamba: removed {path}: damaged (a run killed while writing it?); it is predicted again",
                  file=sys.stderr)
    return removed


def _network_like_predictor(predictor, checkpoint_file: str):
    """(trainer name, network) built the way nnUNetPredictor builds it, for a checkpoint it could not load."""
    import json

    import torch
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels

    trainer = torch.load(checkpoint_file, map_location="cpu", weights_only=False)["trainer_name"]
    pm, cm = predictor.plans_manager, predictor.configuration_manager
    with open(os.path.join(os.path.dirname(os.path.dirname(checkpoint_file)), "dataset.json")) as f:
        dataset_json = json.load(f)
    network = recursive_find_trainer_class_by_name(trainer).build_network_architecture(
        pm, cm, determine_num_input_channels(pm, cm, dataset_json),
        pm.get_label_manager(dataset_json).num_segmentation_heads, enable_deep_supervision=False)
    return trainer, network
