"""Independent float64 oracle: Mamba-1 selective scan as a plain loop, per direction, via autograd."""
import torch
import torch.nn.functional as F

from nnunet_mamba.kernels.directions import scan_order_index


def selective_scan_loop(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """mamba-ssm's selective_scan_ref semantics; u, delta, z: (b, d, l); B, C: (b, n, l); A: (d, n)."""
    if delta_bias is not None:
        delta = delta + delta_bias[..., None]
    if delta_softplus:
        delta = F.softplus(delta)
    b, d, seqlen = u.shape
    x = u.new_zeros((b, d, A.shape[1]))
    ys = []
    for i in range(seqlen):
        dA = torch.exp(delta[:, :, i, None] * A)
        dBu = delta[:, :, i, None] * B[:, None, :, i] * u[:, :, i, None]
        x = dA * x + dBu
        ys.append(torch.einsum("bdn,bn->bd", x, C[:, :, i]))
    y = torch.stack(ys, -1)
    if D is not None:
        y = y + u * D[:, None]
    if z is not None:
        y = y * F.silu(z)
    return y


def multidir_loop(u, delta, A, Bm, Cm, Dskip, delta_bias, z, grid, directions, delta_softplus):
    """Channels-last multi-direction contract built from per-direction permuted loops."""
    out = 0
    for k, direction in enumerate(directions):
        idx = scan_order_index(grid, direction, u.device)
        inv = torch.argsort(idx)
        y = selective_scan_loop(
            u[:, idx].transpose(1, 2), delta[:, idx, k].transpose(1, 2), A[k],
            Bm[:, idx, k].transpose(1, 2), Cm[:, idx, k].transpose(1, 2),
            None if Dskip is None else Dskip[k], None, None if delta_bias is None else delta_bias[k],
            delta_softplus)
        out = out + y.transpose(1, 2)[:, inv]
    if z is not None:
        out = out * F.silu(z)
    return out
