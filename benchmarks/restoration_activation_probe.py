"""Diagnostic for the Mamba restorer's NaN loss on the H100 (benchmarks/results/restoration/report.md): does the
activation scale blow up under AdamW 1e-3 in fp32 on the CPU (reference scan)? Logs the loss, the gradient norm and
max |activation| at the mixer stages every 25 steps (and whenever it exceeds 100).

    python benchmarks/restoration_activation_probe.py mamba_resenc 700
Half-width ResEnc U-Net (16-128 features, blocks 1-3-4-6), patch 32x40x32, batch 2, 30 shipped Hippocampus cases with
Rician noise at 5 %, one thread."""
import json
import sys
import time
import glob
import numpy as np
import torch
import SimpleITK as sitk
from pathlib import Path
from nnunet_mamba.networks.restorer import build_restorer
from nnunet_mamba.restoration.degradations import add_rician_noise, robust_max
from nnunet_mamba.restoration.losses import RestorationLoss
from nnunet_mamba.restoration.inference import case_scale
from nnunet_mamba.layers import MultiDirMamba
import nnunet_mamba

torch.set_num_threads(1)
torch.manual_seed(0)
name = sys.argv[1]
steps = int(sys.argv[2])
files = sorted(glob.glob(str(Path(nnunet_mamba.__file__).parent / "data/hippocampus_demo/imagesTr/*.nii.gz")))[:30]
rng = np.random.default_rng(0)
pairs = []
for f in files:
    clean = sitk.GetArrayFromImage(sitk.ReadImage(f)).astype(np.float32)
    deg = add_rician_noise(clean, 0.05 * robust_max(clean), rng).astype(np.float32)
    s = case_scale(deg)
    pairs.append((deg / s, clean / s))
kw = dict(n_stages=4, features_per_stage=[16, 32, 64, 128], conv_op=torch.nn.Conv3d, kernel_sizes=[[3, 3, 3]] * 4,
          strides=[[1, 1, 1]] + [[2, 2, 2]] * 3, n_blocks_per_stage=[1, 3, 4, 6], n_conv_per_stage_decoder=[1, 1, 1],
          conv_bias=True, norm_op=torch.nn.InstanceNorm3d, norm_op_kwargs={"eps": 1e-5, "affine": True},
          dropout_op=None, dropout_op_kwargs=None, nonlin=torch.nn.LeakyReLU, nonlin_kwargs={"inplace": True})
net = build_restorer(name, kw)
opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=3e-5)
loss_fn = RestorationLoss()
acts = {}
for n, m in net.named_modules():
    if isinstance(m, MultiDirMamba) or n.endswith("stages.2") or n.endswith("stages.3"):
        m.register_forward_hook(lambda mod, i, o, n=n: acts.__setitem__(n, float(o.detach().abs().max())))
P = (32, 40, 32)
t0 = time.time()
for step in range(steps):
    xs, ys = [], []
    for b in range(2):
        d, c = pairs[rng.integers(len(pairs))]
        z, y, x = [rng.integers(0, max(1, S - p + 1)) for S, p in zip(d.shape, P)]
        crop_d = d[z:z + P[0], y:y + P[1], x:x + P[2]]
        crop_c = c[z:z + P[0], y:y + P[1], x:x + P[2]]
        dd, cc = np.zeros(P, np.float32), np.zeros(P, np.float32)
        dd[:crop_d.shape[0], :crop_d.shape[1], :crop_d.shape[2]] = crop_d
        cc[:crop_c.shape[0], :crop_c.shape[1], :crop_c.shape[2]] = crop_c
        xs.append(dd)
        ys.append(cc)
    x = torch.from_numpy(np.stack(xs))[:, None]
    y = torch.from_numpy(np.stack(ys))[:, None]
    out = net(x)
    loss = loss_fn(out, y)
    opt.zero_grad()
    loss.backward()
    gn = torch.nn.utils.clip_grad_norm_(net.parameters(), 12)
    opt.step()
    if step % 25 == 0 or not torch.isfinite(loss) or max(acts.values()) > 100:
        print(json.dumps({"step": step, "loss": round(float(loss), 4), "grad_norm": round(float(gn), 3),
                          "max_act": {k.replace("encoder.stages.", "s"): round(v, 1) for k, v in acts.items()},
                          "t": round(time.time() - t0)}), flush=True)
    if not torch.isfinite(loss):
        break
