"""``nnunet-mamba import-checkpoint``: a model trained with the original U-Mamba or SegMamba code, as a model folder
that the stock ``nnUNetv2_predict`` runs with our trainers."""
from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser(
        "import-checkpoint", help="U-Mamba / SegMamba checkpoints -> an nnU-Net model folder of our trainers",
        description="U-Mamba: give its model folder (<results>/<Dataset>/nnUNetTrainerUMambaBot__nnUNetPlans__"
                    "3d_fullres, with plans.json and fold_X/); every fold's checkpoints are converted. SegMamba: give "
                    "the saved state dict with --segmamba, and the nnU-Net plans of the dataset to predict with "
                    "(-p nnUNet_preprocessed/<Dataset>/nnUNetPlans.json), -c and -f.")
    p.add_argument("-i", "--input", required=True,
                   help="U-Mamba model folder, or with --segmamba the SegMamba state-dict file")
    p.add_argument("-o", "--output", default=None, help="results root to write into (default: $nnUNet_results)")
    p.add_argument("--segmamba", action="store_true", help="the input is a SegMamba state dict")
    p.add_argument("-p", "--plans", help="with --segmamba: nnU-Net plans file (dataset.json beside it)")
    p.add_argument("-c", "--configuration", default="3d_fullres", help="with --segmamba (default 3d_fullres)")
    p.add_argument("-f", "--fold", default="0", help="with --segmamba: the fold to file it under (default 0)")
    p.add_argument("-tr", "--trainer", default="SegMambaTrainer",
                   help="with --segmamba: SegMambaTrainer (default) or a variant with other SegMamba sizes")
    p.add_argument("--overwrite", action="store_true", help="replace an existing model folder (or fold)")
    p.set_defaults(func=run)


def run(args) -> int:
    from nnunet_mamba.checkpoint_import import import_segmamba, import_umamba, results_root

    root = results_root(args.output)
    if args.segmamba:
        if not args.plans:
            raise ValueError("--segmamba needs -p PLANS.json (the nnU-Net plans of the dataset to predict)")
        out = import_segmamba(args.input, args.plans, args.configuration, args.fold, root, args.overwrite,
                              args.trainer)
    else:
        out = import_umamba(args.input, root, args.overwrite)
    trainer, plans, configuration = out.name.split("__")
    dataset = out.parent.name
    print(f"wrote {out}\npredict with: nnUNetv2_predict -i INPUT -o OUTPUT -d {dataset} -c {configuration} "
          f"-tr {trainer} -p {plans}" + (f" -f {args.fold}" if args.segmamba else ""))
    return 0
