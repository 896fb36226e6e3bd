"""Lite-DINO and Lite-Deformable-DETR."""
import copy

from mmdet.registry import MODELS
from mmdet.utils import ConfigType

from ..common.checks import check_bool
from ..common.detectors import EffDeformableDETR, EffDINO
from .kd_attention import KDAttention

#: the encoder a Lite detector builds when its encoder config has no type
DEFAULT_ENCODER = 'InterleavedLiteEncoder'


def lite_transformer_cfgs(encoder: ConfigType, decoder: ConfigType,
                          decoder_key_aware: bool) -> tuple:
    """Encoder / decoder configs of a Lite detector.

    The encoder defaults to :class:`InterleavedLiteEncoder`; with
    ``decoder_key_aware`` the decoder cross-attention becomes
    :class:`KDAttention` (the official ``key_aware=True`` switches both the
    encoder and the decoder cross-attention).

    Args:
        encoder (dict): the detector's encoder config.
        decoder (dict): the detector's decoder config.
        decoder_key_aware (bool): KDA in the decoder cross-attention.

    Returns:
        tuple[dict, dict]: new encoder and decoder configs.
    """
    check_bool('decoder_key_aware', decoder_key_aware)
    encoder = copy.deepcopy(dict(encoder))
    encoder.setdefault('type', DEFAULT_ENCODER)
    decoder = copy.deepcopy(dict(decoder))
    if decoder_key_aware:
        layer_cfg = dict(decoder.get('layer_cfg') or {})
        cross = dict(layer_cfg.get('cross_attn_cfg') or {})
        name = cross.get('type', 'KDAttention')
        cls = MODELS.get(name) if isinstance(name, str) else name
        if cls is None or not issubclass(cls, KDAttention):
            raise ValueError(
                'decoder_key_aware=True needs the decoder cross-attention '
                'to be KDAttention (or a subclass), got '
                f'decoder.layer_cfg.cross_attn_cfg.type={name!r}; set '
                'decoder_key_aware=False to keep it')
        cross['type'] = name
        layer_cfg['cross_attn_cfg'] = cross
        decoder['layer_cfg'] = layer_cfg
    return encoder, decoder


@MODELS.register_module()
class LiteDINO(EffDINO):
    """DINO with Lite DETR's interleaved encoder and key-aware attention.

    Args:
        encoder (dict): encoder config; ``InterleavedLiteEncoder`` unless it
            has a ``type``.
        decoder (dict): decoder config.
        decoder_key_aware (bool): KDA in the decoder cross-attention, as the
            released ``key_aware=True``. Defaults to True.
        *args, **kwargs: the arguments of mmdet's ``DINO``.
    """

    def __init__(self,
                 *args,
                 encoder: ConfigType,
                 decoder: ConfigType,
                 decoder_key_aware: bool = True,
                 **kwargs) -> None:
        encoder, decoder = lite_transformer_cfgs(encoder, decoder,
                                                 decoder_key_aware)
        super().__init__(*args, encoder=encoder, decoder=decoder, **kwargs)
        self.decoder_key_aware = decoder_key_aware


@MODELS.register_module()
class LiteDeformableDETR(EffDeformableDETR):
    """Deformable DETR with Lite DETR's interleaved encoder and key-aware
    attention.

    Args:
        encoder (dict): encoder config; ``InterleavedLiteEncoder`` unless it
            has a ``type``.
        decoder (dict): decoder config.
        decoder_key_aware (bool): KDA in the decoder cross-attention.
            Defaults to True.
        *args, **kwargs: the arguments of mmdet's ``DeformableDETR``.
    """

    def __init__(self,
                 *args,
                 encoder: ConfigType,
                 decoder: ConfigType,
                 decoder_key_aware: bool = True,
                 **kwargs) -> None:
        encoder, decoder = lite_transformer_cfgs(encoder, decoder,
                                                 decoder_key_aware)
        super().__init__(*args, encoder=encoder, decoder=decoder, **kwargs)
        self.decoder_key_aware = decoder_key_aware
