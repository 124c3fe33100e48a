"""Shared shape of every segmentation network here: encoder -> skips -> nnU-Net's ``UNetDecoder``."""
from torch import nn


class EncoderDecoder(nn.Module):
    """``decoder(encoder(x))``; the decoder owns the deep-supervision flag (``decoder.deep_supervision``)."""

    encoder: nn.Module
    decoder: nn.Module

    def forward(self, x):
        return self.decoder(self.encoder(x))

    def compute_conv_feature_map_size(self, input_size):
        return self.encoder.compute_conv_feature_map_size(input_size) + \
            self.decoder.compute_conv_feature_map_size(input_size)
