"""``nnunet-mamba convert msd TASK_DIR``: dataset converters into nnU-Net raw format."""
from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("convert", help="convert datasets into nnU-Net v2 raw format")
    conv = p.add_subparsers(dest="format", required=True)
    msd = conv.add_parser("msd", help="a Medical Segmentation Decathlon task folder (TaskXX_Name)")
    msd.add_argument("task_dir")
    msd.add_argument("-d", "--dataset-id", type=int, default=None, help="default: the task number")
    msd.add_argument("-o", "--output-root", default=None, help="default: $nnUNet_raw")
    msd.add_argument("--name", default=None, help="dataset name (default: from the folder name)")
    msd.add_argument("--overwrite", action="store_true")
    msd.set_defaults(func=run_msd)


def run_msd(args) -> int:
    from nnunet_mamba.dataset_conversion.msd import convert_msd
    out = convert_msd(args.task_dir, args.dataset_id, args.output_root, args.name, args.overwrite,
                      progress=lambda s: print(s, flush=True))
    print(f"wrote {out}")
    return 0
