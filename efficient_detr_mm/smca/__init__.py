"""SMCA (ICCV'21): spatially modulated co-attention, single- and multi-scale.
"""
from .attention import SMCACoAttention
from .detector import SMCADETR
from .gaussian import SMCAGaussian, feature_grid
from .head import SMCAHead
from .layers import SMCADecoder, SMCADecoderLayer, SMCAMultiScaleEncoder

__all__ = [
    'SMCACoAttention', 'SMCAGaussian', 'feature_grid', 'SMCADecoderLayer',
    'SMCADecoder', 'SMCAMultiScaleEncoder', 'SMCAHead', 'SMCADETR'
]
