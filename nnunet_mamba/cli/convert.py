"""``nnunet-mamba convert msd|brats|...|degrade ...``: dataset converters into nnU-Net raw format."""
from __future__ import annotations


from .arguments import dataset_id


def add_parser(sub) -> None:
    p = sub.add_parser("convert", help="convert datasets into nnU-Net v2 raw format")
    conv = p.add_subparsers(dest="format", required=True)
    msd = conv.add_parser("msd", help="a Medical Segmentation Decathlon task folder (TaskXX_Name)")
    msd.add_argument("task_dir")
    msd.add_argument("-d", "--dataset-id", type=dataset_id, default=None, help="default: the task number")
    msd.add_argument("-o", "--output-root", default=None, help="default: $nnUNet_raw")
    msd.add_argument("--name", default=None, help="dataset name (default: from the folder name)")
    msd.add_argument("--overwrite", action="store_true")
    msd.set_defaults(func=run_msd)
    brats = conv.add_parser("brats", help="a folder of BraTS case folders (2021 or 2023+ naming), region-based")
    brats.add_argument("input_dir")
    brats.add_argument("-d", "--dataset-id", type=dataset_id, required=True)
    brats.add_argument("-o", "--output-root", default=None, help="default: $nnUNet_raw")
    brats.add_argument("--name", default="BraTS")
    brats.add_argument("--overwrite", action="store_true")
    brats.set_defaults(func=run_brats)
    amos = conv.add_parser("amos", help="AMOS 2022 (CT + MRI, 15 organs; training + validation lists)")
    amos.add_argument("task_dir")
    amos.add_argument("-d", "--dataset-id", type=dataset_id, default=218)
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
    fol.add_argument("-d", "--dataset-id", type=dataset_id, required=True)
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
    mm.add_argument("-d", "--dataset-id", type=dataset_id, required=True)
    mm.add_argument("--name", required=True)
    mm.add_argument("--classes", nargs="+", default=None, help="class names in label order")
    mm.add_argument("--max-per-split", type=int, default=None, help="keep the first N cases of each split")
    mm.add_argument("-o", "--output-root", default=None, help="default: $nnUNet_raw")
    mm.add_argument("--overwrite", action="store_true")
    mm.set_defaults(func=run_medmnist)
    dg = conv.add_parser("degrade", help="(degraded, clean) restoration pairs from an nnU-Net raw dataset",
                         description="Seeded synthetic degradation of every case (recorded in dataset.json and "
                                     "degradation.json): denoise (--noise, --level = sigma as a fraction of the "
                                     "clean image's 99.5th percentile), sr (--factor, through-plane), kspace "
                                     "(--acceleration, --center-fraction, Cartesian lines, zero-filled magnitude).")
    dg.add_argument("source", help="nnU-Net raw dataset folder (imagesTr/<case>_0000.ext) or MSD-style folder")
    dg.add_argument("task", choices=["denoise", "sr", "kspace"])
    dg.add_argument("-d", "--dataset-id", type=dataset_id, required=True)
    dg.add_argument("--name", required=True)
    dg.add_argument("--noise", choices=["gaussian", "rician"], default="rician")
    dg.add_argument("--level", type=float, default=0.05, help="noise sigma / 99.5th percentile (default 0.05)")
    dg.add_argument("--factor", type=int, default=2, help="slice-thickness factor for sr (2 or 4)")
    dg.add_argument("--acceleration", type=float, default=4.0)
    dg.add_argument("--center-fraction", type=float, default=0.08)
    dg.add_argument("--channel", type=int, default=0, help="source channel to restore (default 0)")
    dg.add_argument("--seed", type=int, default=0)
    dg.add_argument("--max-cases", type=int, default=None, help="keep the first N cases (train and test each)")
    dg.add_argument("-o", "--output-root", default=None, help="default: $nnUNet_raw")
    dg.add_argument("--overwrite", action="store_true")
    dg.set_defaults(func=run_degrade)


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


def run_degrade(args) -> int:
    from nnunet_mamba.dataset_conversion.degrade import convert_degrade
    from nnunet_mamba.restoration.degradations import Degradation
    deg = Degradation(args.task, noise=args.noise, level=args.level, factor=args.factor,
                      acceleration=args.acceleration, center_fraction=args.center_fraction)
    out = convert_degrade(args.source, args.dataset_id, args.name, deg, args.seed, args.channel, args.output_root,
                          args.max_cases, args.overwrite, progress=lambda s: print(s, flush=True))
    print(f"wrote {out} ({deg.describe()}, seed {args.seed})")
    return 0
