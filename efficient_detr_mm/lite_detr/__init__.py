"""Lite DETR (CVPR 2023): key-aware deformable attention, the interleaved
encoder, Lite-DINO and Lite-Deformable-DETR."""
from .detectors import LiteDeformableDETR, LiteDINO, lite_transformer_cfgs
from .encoder import InterleavedLiteEncoder, LiteEncoderLayer
from .kd_attention import KDAttention

__all__ = [
    'KDAttention', 'InterleavedLiteEncoder', 'LiteEncoderLayer', 'LiteDINO',
    'LiteDeformableDETR', 'lite_transformer_cfgs'
]
