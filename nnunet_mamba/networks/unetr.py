"""MONAI's UNETR residual blocks with the settings SegMamba and Swin-UMamba build them with (kernel 3, the
up-blocks' transposed convolution of kernel and stride 2)."""
from __future__ import annotations

from monai.networks.blocks.unetr_block import UnetrBasicBlock, UnetrUpBlock


def unetr_basic(spatial_dims: int, c_in: int, c_out: int, norm_name="instance", res_block: bool = True):
    return UnetrBasicBlock(spatial_dims=spatial_dims, in_channels=c_in, out_channels=c_out, kernel_size=3, stride=1,
                           norm_name=norm_name, res_block=res_block)


def unetr_up(spatial_dims: int, c_in: int, c_out: int, norm_name="instance", res_block: bool = True):
    return UnetrUpBlock(spatial_dims=spatial_dims, in_channels=c_in, out_channels=c_out, kernel_size=3,
                        upsample_kernel_size=2, norm_name=norm_name, res_block=res_block)
