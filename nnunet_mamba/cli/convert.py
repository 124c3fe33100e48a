"""``nnunet-mamba convert msd|brats ...``: dataset converters into nnU-Net raw format."""
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
    brats = conv.add_parser("brats", help="a folder of BraTS case folders (2021 or 2023+ naming), region-based")
    brats.add_argument("input_dir")
    brats.add_argument("-d", "--dataset-id", type=int, required=True)
    brats.add_argument("-o", "--output-root", default=None, help="default: $nnUNet_raw")
    brats.add_argument("--name", default="BraTS")
    brats.add_argument("--overwrite", action="store_true")
    brats.set_defaults(func=run_brats)
    amos = conv.add_parser("amos", help="AMOS 2022 (CT + MRI, 15 organs; training + validation lists)")
    amos.add_argument("task_dir")
    amos.add_argument("-d", "--dataset-id", type=int, default=218)
    amos.add_argument("-o", "--output-root", default=None, help="default: $nnUNet_raw")
    amos.add_argument("--modality", choices=["all", "ct", "mri"], default="all")
    amos.add_argument("--name", default=None)
    amos.add_argument("--overwrite", action="store_true")
    amos.set_defaults(func=run_amos)
    fol = conv.add_parser("folder", help="images (+ labels) in any SimpleITK format or DICOM series folders",
                          description="Case IDs from file names: <case>.<ext> (one channel) or <case>_<0000>.<ext>; "
                                      "labels <case>.<ext>; DICOM: one sub-folder per case.")
    fol.add_argument("--images", required=True, help="training images (or test images when --labels is not given)")
    fol.add_argument("--labels", default=None, help="label files named <case>.<ext>")
    fol.add_argument("--test-images", default=None)
    fol.add_argument("-d", "--dataset-id", type=int, required=True)
    fol.add_argument("--name", required=True)
    fol.add_argument("--channels", nargs="+", default=["image"],
                     help="channel names in order (they choose nnU-Net's normalisation: CT for CT, anything else "
                          "for z-score), e.g. T1 FLAIR")
    fol.add_argument("--label-names", nargs="+", default=None, metavar="NAME=VALUE",
                     help="e.g. background=0 anterior=1 posterior=2")
    fol.add_argument("--channel-pattern", default=None, help="regex with groups 'case' and 'channel' on file stems")
    fol.add_argument("-o", "--output-root", default=None, help="default: $nnUNet_raw")
    fol.add_argument("--overwrite", action="store_true")
    fol.set_defaults(func=run_folder)
    mm = conv.add_parser("medmnist", help="a MedMNIST v2 .npz (2D/3D classification) with per-case classes")
    mm.add_argument("npz")
    mm.add_argument("-d", "--dataset-id", type=int, required=True)
    mm.add_argument("--name", required=True)
    mm.add_argument("--classes", nargs="+", default=None, help="class names in label order")
    mm.add_argument("--max-per-split", type=int, default=None, help="keep the first N cases of each split")
    mm.add_argument("-o", "--output-root", default=None, help="default: $nnUNet_raw")
    mm.add_argument("--overwrite", action="store_true")
    mm.set_defaults(func=run_medmnist)


def run_msd(args) -> int:
    from nnunet_mamba.dataset_conversion.msd import convert_msd
    out = convert_msd(args.task_dir, args.dataset_id, args.output_root, args.name, args.overwrite,
                      progress=lambda s: print(s, flush=True))
    print(f"wrote {out}")
    return 0


def run_brats(args) -> int:
    from nnunet_mamba.dataset_conversion.brats import convert_brats
    out = convert_brats(args.input_dir, args.dataset_id, args.output_root, args.name, args.overwrite,
                        progress=lambda s: print(s, flush=True))
    print(f"wrote {out}")
    return 0


def run_amos(args) -> int:
    from nnunet_mamba.dataset_conversion.amos import convert_amos
    out = convert_amos(args.task_dir, args.dataset_id, args.output_root, args.name, args.modality, args.overwrite,
                       progress=lambda s: print(s, flush=True))
    print(f"wrote {out}")
    return 0


def run_folder(args) -> int:
    from nnunet_mamba.dataset_conversion.folder import DEFAULT_CHANNEL_PATTERN, convert_folder
    names = None
    if args.label_names:
        names = {}
        for item in args.label_names:
            key, sep, value = item.partition("=")
            if not sep or not value.strip().lstrip("-").isdigit():
                raise ValueError(f"--label-names: {item!r} is not NAME=INTEGER")
            names[key] = int(value)
    out = convert_folder(args.images, args.dataset_id, args.name, args.channels, args.labels, names,
                         args.test_images, args.output_root, args.channel_pattern or DEFAULT_CHANNEL_PATTERN,
                         args.overwrite, progress=lambda s: print(s, flush=True))
    print(f"wrote {out}")
    return 0


def run_medmnist(args) -> int:
    from nnunet_mamba.dataset_conversion.medmnist import convert_medmnist
    out = convert_medmnist(args.npz, args.dataset_id, args.name, args.classes, args.output_root, args.max_per_split,
                           args.overwrite, progress=lambda s: print(s, flush=True))
    print(f"wrote {out}")
    return 0
