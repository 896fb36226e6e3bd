from .attention import attend, attention_weights, merge_heads, split_heads
from .backbones import DilatedResNet
from .builder import build_or_default, reinit_custom_modules
from .deform_sampling import (deform_sampling_locations,
                              multi_scale_bilinear_sample)
from .detectors import EffDeformableDETR, EffDETR, EffDINO
from .heads import EffDETRHead, EffDINOHead
from .layers import (EffDeformableDetrTransformerDecoder,
                     EffDeformableDetrTransformerDecoderLayer,
                     EffDeformableDetrTransformerEncoder,
                     EffDeformableDetrTransformerEncoderLayer,
                     EffDetrTransformerDecoder, EffDetrTransformerDecoderLayer,
                     EffDetrTransformerEncoder, EffDetrTransformerEncoderLayer,
                     EffDinoTransformerDecoder)
from .masks import num_valid, valid_mask
from .tokens import gather_tokens, scatter_tokens

__all__ = [
    'attend', 'attention_weights', 'merge_heads', 'split_heads',
    'valid_mask', 'num_valid', 'gather_tokens', 'scatter_tokens',
    'deform_sampling_locations', 'multi_scale_bilinear_sample',
    'build_or_default', 'reinit_custom_modules', 'DilatedResNet', 'EffDETR',
    'EffDeformableDETR', 'EffDINO', 'EffDETRHead', 'EffDINOHead',
    'EffDetrTransformerEncoder',
    'EffDetrTransformerEncoderLayer', 'EffDetrTransformerDecoder',
    'EffDetrTransformerDecoderLayer', 'EffDeformableDetrTransformerEncoder',
    'EffDeformableDetrTransformerEncoderLayer',
    'EffDeformableDetrTransformerDecoder',
    'EffDeformableDetrTransformerDecoderLayer', 'EffDinoTransformerDecoder'
]
