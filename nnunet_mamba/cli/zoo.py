"""``nnunet-mamba zoo``: every registry network for one plan: parameters, compute, memory estimate, source."""
from __future__ import annotations

import json
import os
from pathlib import Path

from .stock_commands import dataset_name


def add_parser(sub) -> None:
    p = sub.add_parser("zoo", help="every network for a plan: parameters, compute, memory estimate, paper",
                       description="For a dataset's plans (-d, -c, -p; read from $nnUNet_preprocessed) or an example "
                                   "plan (--example): parameters, multiply-accumulates per sample (Mamba projections "
                                   "and the rest), selective-scan state updates, nnU-Net's activation-based memory "
                                   "estimate at the plan's batch size, and the paper and code each network "
                                   "reproduces. Counted on fake tensors: no GPU, no memory.")
    p.add_argument("--example", choices=["hippocampus", "brats"], help="an example stock 3D plan instead of -d")
    p.add_argument("-d", "--dataset", help="dataset id or name in $nnUNet_preprocessed")
    p.add_argument("-c", "--configuration", default="3d_fullres")
    p.add_argument("-p", "--plans", default="nnUNetPlans")
    p.add_argument("-n", "--networks", nargs="+", default=None, help="only these networks")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)


def _dataset_plan(dataset: str, configuration: str, plans: str):
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
    from nnunet_mamba.networks import from_configuration

    pre = os.environ.get("nnUNet_preprocessed")
    if not pre:
        raise RuntimeError("nnUNet_preprocessed is not set (or use --example)")
    name = dataset_name(dataset)
    plans_file = Path(pre) / name / f"{plans}.json"
    if not plans_file.is_file():
        raise FileNotFoundError(f"{plans_file}: no such plans (run nnUNetv2_plan_and_preprocess first)")
    pm = PlansManager(str(plans_file))
    if configuration not in pm.available_configurations:
        raise ValueError(f"{plans_file}: no configuration {configuration!r} "
                         f"(available: {', '.join(pm.available_configurations)})")
    cm = pm.get_configuration(configuration)
    dataset_json = json.loads((Path(pre) / name / "dataset.json").read_text())
    return (from_configuration(cm), tuple(cm.patch_size), determine_num_input_channels(pm, cm, dataset_json),
            pm.get_label_manager(dataset_json).num_segmentation_heads, cm.batch_size,
            f"{name} {plans} {configuration}")


def run(args) -> int:
    from nnunet_mamba.networks import list_networks
    from nnunet_mamba.zoo import example_arch_kwargs, markdown, zoo

    if args.example:
        arch, patch, n_in, n_out, batch = example_arch_kwargs(args.example)
        title = f"example plan '{args.example}'"
    elif args.dataset:
        arch, patch, n_in, n_out, batch, title = _dataset_plan(args.dataset, args.configuration, args.plans)
    else:
        raise ValueError("give -d DATASET (with -c, -p) or --example hippocampus|brats")
    unknown = [n for n in args.networks or [] if n not in list_networks()]
    if unknown:
        raise ValueError(f"unknown network(s) {', '.join(unknown)}; available: {', '.join(list_networks())}")
    rows = zoo(arch, n_in, n_out, patch, batch, args.networks)
    title += f": patch {'x'.join(map(str, patch))}, batch {batch}, {n_in} channel(s) in, {n_out} out"
    print(json.dumps({"plan": title, "rows": rows}, indent=2) if args.json else markdown(rows, title))
    return 0
