"""VMamba's 2D selective-scan block (SS2D) and the VMamba building blocks around it, on our scan.

VMamba (Liu et al., "VMamba: Visual State Space Model", 2024, ``MzeroMiko/VMamba``, its first release)
introduced SS2D: ``in_proj`` -> depthwise 3x3 ``conv2d`` -> SiLU -> a selective scan in four directions
(row-major and column-major, each forward and reversed) sharing one input, each direction with its own
``x_proj``/``dt_proj``/``A``/``D``, outputs summed -> ``out_norm`` (LayerNorm) -> times ``SiLU(z)`` ->
``out_proj``. The networks built on it vendor this release's code unchanged in the parts that hold
parameters, so one class serves all of them:

* VM-UNet (``JCruan519/VM-UNet``, ``models/vmunet/vmamba.py``),
* Swin-UMamba (``JiarunLiu/Swin-UMamba``, ``swin_umamba/nnunetv2/nets/SwinUMamba.py``),
* MedMamba (``YubiaoYue/MedMamba``, ``MedMamba.py``).

Parameter names and shapes are theirs (VMamba's stacked layout), so their state dicts load as they are:

=================  ==================  ===========================================================
name               shape               initialisation (as in VMamba)
=================  ==================  ===========================================================
in_proj.weight     (2 D, d_model)      nn.Linear default (the networks re-draw it, see
                                       :func:`vmamba_init_weights`)
conv2d.weight/bias (D, 1, k, k), (D,)  nn.Conv2d default (depthwise, ``padding=(k-1)//2``)
x_proj_weight      (K, R + 2 N, D)     four nn.Linear(D, R + 2N) defaults, stacked
dt_projs_weight    (K, D, R)           U(-R^-0.5 * dt_scale, R^-0.5 * dt_scale) ("random")
dt_projs_bias      (K, D)              inverse softplus of a log-uniform dt in [dt_min, dt_max]
A_logs             (K D, N)            log(1..N) (S4D-real), ``_no_weight_decay``
Ds                 (K D,)              ones, ``_no_weight_decay``
out_norm           LayerNorm(D)        ones / zeros
out_proj.weight    (d_model, D)        nn.Linear default
=================  ==================  ===========================================================

with K = 4 directions, D = ``expand * d_model``, N = ``d_state``, R = ``dt_rank`` (``ceil(d_model / 16)``).
Direction k (index into every stacked tensor) is :data:`SS2D_DIRECTIONS` [k]: row-major, column-major,
row-major reversed, column-major reversed - the order of VMamba's ``forward_core`` (``x_hwwh`` then its flip).

The selective scan is :func:`nnunet_mamba.kernels.multidir_selective_scan` with the four directions fused
(shared input, per-direction parameters, outputs summed) and ``z=None``: SS2D normalises the summed scan output
before the gate. As in VMamba, the scan and ``out_norm`` run in float32 whatever the autocast dtype.
Should a variant name its tensors differently, subclass and map the names in ``_load_from_state_dict``; none
of the three networks needs it.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from torch import nn
import torch.nn.functional as F

from nnunet_mamba.kernels import ScanDirection, multidir_selective_scan

SS2D_DIRECTIONS = (ScanDirection((0, 1)), ScanDirection((1, 0)), ScanDirection((0, 1), True),
                   ScanDirection((1, 0), True))


class DropPath(nn.Module):
    """Stochastic depth per sample (timm's ``DropPath``, ``scale_by_keep=True``); the identity in eval mode."""

    def __init__(self, drop_prob: float = 0.0):
        super().__init__()
        self.drop_prob = float(drop_prob)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * (mask / keep if keep > 0.0 else mask)

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"


class SS2D(nn.Module):
    """VMamba's SS2D on channels-last maps: ``(B, H, W, d_model) -> (B, H, W, d_model)``."""

    def __init__(self, d_model: int, d_state: int = 16, d_conv: int = 3, expand: float = 2,
                 dt_rank: int | str = "auto", dt_min: float = 0.001, dt_max: float = 0.1, dt_init: str = "random",
                 dt_scale: float = 1.0, dt_init_floor: float = 1e-4, dropout: float = 0.0, conv_bias: bool = True,
                 bias: bool = False, backend: Optional[str] = None):
        super().__init__()
        K = len(SS2D_DIRECTIONS)
        self.d_model, self.d_state, self.d_conv, self.expand = d_model, d_state, d_conv, expand
        self.d_inner = int(expand * d_model)
        self.dt_rank = math.ceil(d_model / 16) if dt_rank == "auto" else int(dt_rank)
        self.backend = backend
        D, R, N = self.d_inner, self.dt_rank, d_state
        self.in_proj = nn.Linear(d_model, 2 * D, bias=bias)
        self.conv2d = nn.Conv2d(D, D, kernel_size=d_conv, padding=(d_conv - 1) // 2, groups=D, bias=conv_bias)
        self.act = nn.SiLU()
        # VMamba draws K nn.Linear(D, R + 2N, bias=False) and stacks their weights
        self.x_proj_weight = nn.Parameter(torch.stack([nn.Linear(D, R + 2 * N, bias=False).weight.detach()
                                                       for _ in range(K)]))
        dt_w, dt_b = zip(*(self._dt_init(R, D, dt_scale, dt_init, dt_min, dt_max, dt_init_floor) for _ in range(K)))
        self.dt_projs_weight = nn.Parameter(torch.stack(dt_w))
        self.dt_projs_bias = nn.Parameter(torch.stack(dt_b))
        self.A_logs = nn.Parameter(torch.log(torch.arange(1, N + 1, dtype=torch.float32)).repeat(K * D, 1))
        self.Ds = nn.Parameter(torch.ones(K * D))
        self.A_logs._no_weight_decay = True
        self.Ds._no_weight_decay = True
        self.out_norm = nn.LayerNorm(D)
        self.out_proj = nn.Linear(D, d_model, bias=bias)
        self.dropout = nn.Dropout(dropout) if dropout > 0.0 else None

    @staticmethod
    def _dt_init(dt_rank, d_inner, dt_scale, dt_init, dt_min, dt_max, dt_init_floor):
        """One direction's dt projection, as VMamba's ``SS2D.dt_init``: (weight (D, R), bias (D,))."""
        weight = torch.empty(d_inner, dt_rank)
        std = dt_rank ** -0.5 * dt_scale
        if dt_init == "constant":
            nn.init.constant_(weight, std)
        elif dt_init == "random":
            nn.init.uniform_(weight, -std, std)
        else:
            raise NotImplementedError(f"dt_init {dt_init!r}")
        dt = torch.exp(torch.rand(d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = dt.clamp(min=dt_init_floor)
        return weight, dt + torch.log(-torch.expm1(-dt))  # inverse softplus

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        Bsz, H, W, _ = x.shape
        xi, z = self.in_proj(x).chunk(2, dim=-1)
        xi = self.act(self.conv2d(xi.permute(0, 3, 1, 2).contiguous()))  # (B, D, H, W)
        y = self.scan(xi)  # (B, H*W, D), float32
        y = self.out_norm(y.view(Bsz, H, W, -1))
        out = self.out_proj(y * F.silu(z))
        return self.dropout(out) if self.dropout is not None else out

    def scan(self, xi: torch.Tensor) -> torch.Tensor:
        """The four-direction selective scan of the conv output ``xi`` (B, D, H, W), summed over directions,
        as tokens in row-major order: (B, H*W, D), float32."""
        Bsz, D, H, W = xi.shape
        K, N, R = len(SS2D_DIRECTIONS), self.d_state, self.dt_rank
        u = xi.flatten(2).transpose(1, 2)  # (B, L, D)
        # x_proj and dt_proj are pointwise: computed once in canonical order for every direction
        x_dbl = torch.einsum("bld,kcd->blkc", u, self.x_proj_weight.to(u.dtype))
        dts, Bs, Cs = torch.split(x_dbl, [R, N, N], dim=-1)
        delta = torch.einsum("blkr,kdr->blkd", dts, self.dt_projs_weight.to(dts.dtype))
        with torch.autocast(u.device.type, enabled=False):
            return multidir_selective_scan(
                u.float(), delta.float(), -torch.exp(self.A_logs.float()).view(K, D, N), Bs.float(), Cs.float(),
                self.Ds.float().view(K, D), None, self.dt_projs_bias.float(), grid=(H, W),
                directions=SS2D_DIRECTIONS, delta_softplus=True, backend=self.backend)

    def activation_elements(self, tokens: int) -> int:
        """Rough training memory per sample (nnU-Net planner units) for ``tokens`` positions."""
        return int(self.d_inner * (6 + 0.7 * len(SS2D_DIRECTIONS) + 4) * tokens)


class VSSBlock(nn.Module):
    """VMamba's ``VSSBlock``: ``x + drop_path(SS2D(ln_1(x)))`` on channels-last maps."""

    def __init__(self, hidden_dim: int, drop_path: float = 0.0, norm_layer=nn.LayerNorm, attn_drop_rate: float = 0.0,
                 d_state: int = 16, backend: Optional[str] = None, **ss2d_kwargs):
        super().__init__()
        self.ln_1 = norm_layer(hidden_dim)
        self.self_attention = SS2D(hidden_dim, d_state=d_state, dropout=attn_drop_rate, backend=backend, **ss2d_kwargs)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop_path(self.self_attention(self.ln_1(x)))

    def activation_elements(self, tokens: int) -> int:
        return self.self_attention.activation_elements(tokens) + 3 * self.self_attention.d_model * tokens


class PatchEmbed2D(nn.Module):
    """Non-overlapping ``patch_size`` conv to ``embed_dim`` channels, channels-last out, then the norm."""

    def __init__(self, patch_size: int = 4, in_chans: int = 3, embed_dim: int = 96, norm_layer=None):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = norm_layer(embed_dim) if norm_layer is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x).permute(0, 2, 3, 1)
        return self.norm(x) if self.norm is not None else x


class PatchMerging2D(nn.Module):
    """2x2 neighbourhoods concatenated (order (0,0), (1,0), (0,1), (1,1)), LayerNorm, linear 4C -> 2C.
    An odd height or width loses its last row or column, as in VMamba."""

    def __init__(self, dim: int, norm_layer=nn.LayerNorm):
        super().__init__()
        self.dim = dim
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = norm_layer(4 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        h, w = H // 2, W // 2
        parts = [x[:, i:2 * h:2, j:2 * w:2, :] for i, j in ((0, 0), (1, 0), (0, 1), (1, 1))]
        return self.reduction(self.norm(torch.cat(parts, -1)))


class VSSLayer(nn.Module):
    """An encoder stage: ``depth`` VSS blocks, then ``PatchMerging2D`` if ``downsample``."""

    def __init__(self, dim: int, depth: int, drop_path: Sequence[float], norm_layer=nn.LayerNorm, d_state: int = 16,
                 downsample: bool = False, attn_drop: float = 0.0, backend: Optional[str] = None):
        super().__init__()
        self.dim = dim
        self.blocks = nn.ModuleList(VSSBlock(dim, drop_path[i], norm_layer, attn_drop, d_state, backend=backend)
                                    for i in range(depth))
        self.downsample = PatchMerging2D(dim, norm_layer) if downsample else None

    def forward(self, x):
        for blk in self.blocks:
            x = blk(x)
        return self.downsample(x) if self.downsample is not None else x


def drop_path_rates(depths: Sequence[int], rate: float) -> list[list[float]]:
    """Stochastic depth linearly from 0 to ``rate`` over all blocks, split per stage (VMamba's ``dpr``)."""
    dpr = [v.item() for v in torch.linspace(0, rate, sum(depths), device="cpu")]
    return [dpr[sum(depths[:i]):sum(depths[:i + 1])] for i in range(len(depths))]


def vmamba_init_weights(m: nn.Module) -> None:
    """VMamba's ``VSSM._init_weights``: every nn.Linear truncated-normal (std 0.02, cut at +-2) with zero bias,
    LayerNorms to ones/zeros. The stacked SS2D tensors are no nn.Linear and keep their own initialisation."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.constant_(m.bias, 0)
    elif isinstance(m, nn.LayerNorm):
        nn.init.constant_(m.bias, 0)
        nn.init.constant_(m.weight, 1.0)
