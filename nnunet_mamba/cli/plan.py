"""``nnunet-mamba plan``: nnU-Net planning (and preprocessing) sized for one of our networks."""
from __future__ import annotations

import argparse
import os

from .arguments import dataset_id, gpu_memory


def add_parser(sub) -> None:
    p = sub.add_parser("plan", help="plan and preprocess a dataset with patch/batch sized for a Mamba network",
                       description=__doc__ + "\n\nLike nnUNetv2_plan_and_preprocess -pl nnUNetPlannerResEncM, but "
                       "the GPU-memory estimate includes the Mamba layers of --network.",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-d", "--dataset", nargs="+", type=dataset_id, required=True, help="dataset id(s)")
    p.add_argument("-n", "--network", default="mamba_resenc",
                   help="registry network the trainer will use (default mamba_resenc = MambaTrainer)")
    p.add_argument("-gpu", "--gpu-memory-gb", type=gpu_memory, default=8.0,
                   help="GPU memory target in GB (default 8; at least 2)")
    p.add_argument("-c", "--configurations", nargs="+", default=["2d", "3d_fullres", "3d_lowres"])
    p.add_argument("--plans-name", default=None, help="default nnUNetMambaPlans_<network>_<N>G")
    p.add_argument("-np", "--num-processes", type=int, default=4)
    p.add_argument("--no-preprocess", action="store_true", help="write the plans only")
    p.add_argument("--verify_dataset_integrity", action="store_true")
    p.set_defaults(func=run)


def run(args) -> int:
    for var in ("nnUNet_raw", "nnUNet_preprocessed"):
        if not os.environ.get(var):
            raise RuntimeError(f"{var} is not set: export it as for the nnU-Net commands")
    from nnunetv2.experiment_planning.plan_and_preprocess_api import extract_fingerprints, preprocess
    from nnunetv2.utilities.dataset_name_id_conversion import convert_id_to_dataset_name

    from nnunet_mamba.planning import TRAINER_OF, MambaPlanner, default_plans_name

    plans_name = args.plans_name or default_plans_name(args.network, args.gpu_memory_gb)
    for d in args.dataset:
        name = convert_id_to_dataset_name(d)
        fp = os.path.join(os.environ["nnUNet_preprocessed"], name, "dataset_fingerprint.json")
        if args.verify_dataset_integrity or not os.path.isfile(fp):
            print(f"fingerprint of {name} ...", flush=True)
            extract_fingerprints([d], num_processes=args.num_processes,
                                 check_dataset_integrity=args.verify_dataset_integrity)
        MambaPlanner(d, args.gpu_memory_gb, plans_name=plans_name, network=args.network).plan_experiment()
    if not args.no_preprocess:
        preprocess(args.dataset, plans_name, configurations=tuple(args.configurations),
                   num_processes=[args.num_processes] * len(args.configurations))
    trainer = TRAINER_OF.get(args.network, "<trainer>")
    print(f"\nplans: {plans_name}\ntrain with: nnUNetv2_train {args.dataset[0]} 3d_fullres 0 -tr {trainer} "
          f"-p {plans_name}")
    return 0
