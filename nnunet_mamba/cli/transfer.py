"""``nnunet-mamba transfer``: a checkpoint's backbone (encoder) into another task's network, as a weights file
that the stock ``nnUNetv2_train ... -pretrained_weights FILE`` accepts."""
from __future__ import annotations

import os
from pathlib import Path

from .stock_commands import dataset_name


def add_parser(sub) -> None:
    p = sub.add_parser("transfer", help="segmentation <-> classification: copy a checkpoint's encoder into the "
                                        "network of another trainer, for -pretrained_weights",
                       description="Builds the target trainer's network from the dataset's plans (as nnUNetv2_train "
                                   "would), copies every encoder tensor from the source checkpoint (same backbone, "
                                   "width and plans needed) and writes all of the target's weights (head freshly "
                                   "initialised) so that nnU-Net's -pretrained_weights check passes.")
    p.add_argument("-i", "--source", required=True, help="source checkpoint (e.g. fold_0/checkpoint_final.pth)")
    p.add_argument("-o", "--output", required=True, help="weights file to write (.pth)")
    p.add_argument("-d", "--dataset", required=True, help="target dataset id or name (in $nnUNet_preprocessed)")
    p.add_argument("-c", "--configuration", required=True)
    p.add_argument("-tr", "--trainer", required=True, help="target trainer, e.g. MambaClassifierTrainer")
    p.add_argument("-p", "--plans", default="nnUNetPlans")
    p.set_defaults(func=run)


def target_network(dataset: str, configuration: str, trainer: str, plans: str = "nnUNetPlans"):
    """The network ``nnUNetv2_train dataset configuration FOLD -tr trainer -p plans`` would build."""
    import json
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
    import nnunet_mamba.trainers as ours
    from nnunet_mamba.classification.labels import class_names
    from nnunet_mamba.trainers.classification import MambaClassifierTrainer

    cls = getattr(ours, trainer, None)
    if cls is None:
        raise ValueError(f"unknown trainer {trainer!r}; transfer works between nnunet-mamba trainers, e.g. "
                         "MambaTrainer, MambaClassifierTrainer (and their NoMamba/UMamba/SegMamba variants)")
    pre = os.environ.get("nnUNet_preprocessed")
    if not pre:
        raise RuntimeError("nnUNet_preprocessed is not set")
    name = dataset_name(dataset)
    plans_file = Path(pre) / name / f"{plans}.json"
    if not plans_file.is_file():
        raise FileNotFoundError(f"{plans_file}: no such plans (run nnUNetv2_plan_and_preprocess first)")
    pm = PlansManager(str(plans_file))
    cm = pm.get_configuration(configuration)
    dataset_json = json.loads((Path(pre) / name / "dataset.json").read_text())
    n_in = determine_num_input_channels(pm, cm, dataset_json)
    if issubclass(cls, MambaClassifierTrainer):
        n_out = len(class_names(dataset_json))
    else:
        n_out = pm.get_label_manager(dataset_json).num_segmentation_heads
    return cls.build_network_architecture(pm, cm, n_in, n_out, True)


def run(args) -> int:
    import torch
    from nnunet_mamba.checkpoints import read_checkpoint
    from nnunet_mamba.networks.transfer import transfer_encoder

    src = Path(args.source)
    ckpt = read_checkpoint(src)
    net = target_network(args.dataset, args.configuration, args.trainer, args.plans)
    try:
        weights, n = transfer_encoder(ckpt["network_weights"], net)
    except ValueError as e:
        raise ValueError(f"{src} -> {args.trainer}: {e}") from None
    out = Path(args.output)
    tmp = out.with_name(out.name + ".partial")
    torch.save({"network_weights": weights, "transfer": {"source": str(src), "source_trainer":
                ckpt.get("trainer_name"), "target_trainer": args.trainer, "encoder_tensors": n}}, tmp)
    os.replace(tmp, out)
    print(f"wrote {out}: {n} encoder tensors from {ckpt.get('trainer_name', src.name)}; use it with "
          f"nnUNetv2_train ... -tr {args.trainer} -pretrained_weights {out}")
    return 0
