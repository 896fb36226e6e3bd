"""Lite DETR (CVPR 2023): key-aware deformable attention and the
interleaved encoder."""
from .kd_attention import KDAttention

__all__ = ['KDAttention']
