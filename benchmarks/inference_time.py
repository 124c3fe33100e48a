"""Sliding-window inference time of one case with nnU-Net's predictor, per network (a benchmark).

Every network is built the way ``nnUNetv2_predict`` builds it (``Trainer.build_network_architecture``
from the plans), with its initial weights (time does not depend on them), and run through
``nnUNetPredictor.predict_single_npy_array`` (preprocessing, sliding window with nnU-Net's default
test-time mirroring unless the trainer turns it off, resampling back). GPU: median of 3 after a
warm-up; CPU: ``torch.set_num_threads(--threads)`` (pin the process with taskset for a fair 2-core
figure), median of --cpu-reps.

    python benchmarks/inference_time.py --plans PLANS.json --dataset-json dataset.json --image case_0000.nii.gz \
        --trainers nnUNetTrainer MambaTrainer ... --device cuda cpu --out results/inference_x.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch


def trainer_class(name):
    """Our trainers by name, else nnU-Net's own (nnUNetTrainer, ...)."""
    import nnunet_mamba.trainers as ours
    if hasattr(ours, name):
        return getattr(ours, name)
    from os.path import join

    import nnunetv2
    from nnunetv2.utilities.find_class_by_name import recursive_find_python_class
    return recursive_find_python_class(join(nnunetv2.__path__[0], "training", "nnUNetTrainer"), name,
                                       "nnunetv2.training.nnUNetTrainer")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--plans", required=True)
    ap.add_argument("--dataset-json", required=True)
    ap.add_argument("--image", required=True, nargs="+", help="the channel files of one case")
    ap.add_argument("--configuration", default="3d_fullres")
    ap.add_argument("--trainers", nargs="+", required=True)
    ap.add_argument("--device", nargs="+", default=["cuda"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cpu-reps", type=int, default=2)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
    plans = json.load(open(a.plans))
    dataset_json = json.load(open(a.dataset_json))
    pm = PlansManager(plans)
    cm = pm.get_configuration(a.configuration)
    lm = pm.get_label_manager(dataset_json)
    img, props = SimpleITKIO().read_images(a.image)
    rows = []
    for dev in a.device:
        if dev == "cpu":
            torch.set_num_threads(a.threads)
        for name in a.trainers:
            cls = trainer_class(name)
            net = cls.build_network_architecture(pm, cm, img.shape[0], lm.num_segmentation_heads, False)
            mirror = (0, 1, 2) if getattr(cls, "test_time_mirroring", True) else None
            pred = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=mirror is not None,
                                   perform_everything_on_device=dev == "cuda", device=torch.device(dev),
                                   verbose=False, verbose_preprocessing=False, allow_tqdm=False)
            pred.manual_initialization(net, pm, cm, [net.state_dict()], dataset_json, name, mirror)
            reps = 3 if dev == "cuda" else a.cpu_reps
            times = []
            for i in range(reps + 1):
                if dev == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                seg = pred.predict_single_npy_array(img, props, None, None, False)
                if dev == "cuda":
                    torch.cuda.synchronize()
                if i > 0:
                    times.append(time.perf_counter() - t0)
            row = dict(trainer=name, device=torch.cuda.get_device_name() if dev == "cuda" else
                       f"cpu ({a.threads} threads)", median_s=statistics.median(times), times_s=times,
                       mirroring=mirror is not None, image_shape=list(img.shape), output_shape=list(seg.shape))
            rows.append(row)
            print(json.dumps(row), flush=True)
            json.dump(dict(rows=rows, torch=torch.__version__), open(a.out, "w"), indent=1)


if __name__ == "__main__":
    main()
