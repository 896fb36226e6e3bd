"""Registry-aware versions of mmdet's DETR-family encoders and decoders.

Each class keeps the parameter names and the forward of its mmdet parent; it
only changes how sub-modules are built: a sub-config that carries ``type`` is
built with ``MODELS.build`` (so any registered attention, FFN or layer can be
swapped in by config) and a sub-config without ``type`` gives mmdet's own
class, exactly as in mmdet.
"""
from mmcv.cnn import build_norm_layer
from mmcv.cnn.bricks.transformer import FFN, MultiheadAttention
from mmcv.ops import MultiScaleDeformableAttention
from mmdet.models.layers.transformer import (
    DeformableDetrTransformerDecoder, DeformableDetrTransformerDecoderLayer,
    DeformableDetrTransformerEncoder, DeformableDetrTransformerEncoderLayer,
    DetrTransformerDecoder, DetrTransformerDecoderLayer,
    DetrTransformerEncoder, DetrTransformerEncoderLayer,
    DinoTransformerDecoder, detr_layers)
from mmdet.models.layers.transformer.utils import MLP
from mmdet.registry import MODELS
from mmengine.model import ModuleList
from torch import nn

from .builder import build_or_default

#: mmdet encodes a 4-d box with ``coordinate_to_encoding`` /
#: ``get_proposal_pos_embed`` at their default 128 features per coordinate,
#: whatever ``embed_dims`` is; layers that consume that encoding take this
#: width (equal to 2 x embed_dims in mmdet's 256-d models, where it is the
#: same layer mmdet builds), so 128-d tiny models work too.
PROPOSAL_EMBED_DIMS = 4 * 128


class _RegistryLayerMixin:
    """Builds attention(s), FFN and norms of a transformer layer."""

    default_self_attn: type = MultiheadAttention
    default_cross_attn: type = None  # None: the layer has no cross-attention
    num_norms: int = 2

    def _init_layers(self) -> None:
        self.self_attn = build_or_default(self.self_attn_cfg,
                                          self.default_self_attn)
        if self.default_cross_attn is not None:
            self.cross_attn = build_or_default(self.cross_attn_cfg,
                                               self.default_cross_attn)
        self.embed_dims = self.self_attn.embed_dims
        self.ffn = build_or_default(self.ffn_cfg, FFN)
        self.norms = ModuleList([
            build_norm_layer(self.norm_cfg, self.embed_dims)[1]
            for _ in range(self.num_norms)
        ])


@MODELS.register_module()
class EffDetrTransformerEncoderLayer(_RegistryLayerMixin,
                                     DetrTransformerEncoderLayer):
    """mmdet's ``DetrTransformerEncoderLayer``, registry-aware."""


@MODELS.register_module()
class EffDetrTransformerDecoderLayer(_RegistryLayerMixin,
                                     DetrTransformerDecoderLayer):
    """mmdet's ``DetrTransformerDecoderLayer``, registry-aware."""
    default_cross_attn = MultiheadAttention
    num_norms = 3


@MODELS.register_module()
class EffDeformableDetrTransformerEncoderLayer(
        _RegistryLayerMixin, DeformableDetrTransformerEncoderLayer):
    """mmdet's ``DeformableDetrTransformerEncoderLayer``, registry-aware."""
    default_self_attn = MultiScaleDeformableAttention


@MODELS.register_module()
class EffDeformableDetrTransformerDecoderLayer(
        _RegistryLayerMixin, DeformableDetrTransformerDecoderLayer):
    """mmdet's ``DeformableDetrTransformerDecoderLayer``, registry-aware."""
    default_cross_attn = MultiScaleDeformableAttention
    num_norms = 3


class _RegistryStackMixin:
    """Builds the layers of an encoder / decoder through the registry."""

    default_layer: type = None

    def _build_layers(self) -> None:
        self.layers = ModuleList([
            build_or_default(self.layer_cfg, self.default_layer)
            for _ in range(self.num_layers)
        ])
        self.embed_dims = self.layers[0].embed_dims

    def _wrap_checkpoint(self) -> None:
        """Gradient checkpointing of the first ``num_cp`` layers (fairscale),
        as mmdet's encoders do."""
        if self.num_cp <= 0:
            return
        if detr_layers.checkpoint_wrapper is None:
            raise NotImplementedError(
                'num_cp > 0 needs fairscale: pip install fairscale')
        for i in range(self.num_cp):
            self.layers[i] = detr_layers.checkpoint_wrapper(self.layers[i])


@MODELS.register_module()
class EffDetrTransformerEncoder(_RegistryStackMixin, DetrTransformerEncoder):
    """mmdet's ``DetrTransformerEncoder``, registry-aware."""
    default_layer = EffDetrTransformerEncoderLayer

    def _init_layers(self) -> None:
        self._build_layers()
        self._wrap_checkpoint()


@MODELS.register_module()
class EffDetrTransformerDecoder(_RegistryStackMixin, DetrTransformerDecoder):
    """mmdet's ``DetrTransformerDecoder``, registry-aware."""
    default_layer = EffDetrTransformerDecoderLayer

    def _init_layers(self) -> None:
        self._build_layers()
        self.post_norm = build_norm_layer(self.post_norm_cfg,
                                          self.embed_dims)[1]


@MODELS.register_module()
class EffDeformableDetrTransformerEncoder(_RegistryStackMixin,
                                          DeformableDetrTransformerEncoder):
    """mmdet's ``DeformableDetrTransformerEncoder``, registry-aware."""
    default_layer = EffDeformableDetrTransformerEncoderLayer

    def _init_layers(self) -> None:
        self._build_layers()
        self._wrap_checkpoint()


@MODELS.register_module()
class EffDeformableDetrTransformerDecoder(_RegistryStackMixin,
                                          DeformableDetrTransformerDecoder):
    """mmdet's ``DeformableDetrTransformerDecoder``, registry-aware."""
    default_layer = EffDeformableDetrTransformerDecoderLayer

    def _init_layers(self) -> None:
        self._build_layers()
        if self.post_norm_cfg is not None:
            raise ValueError(
                f'{self._get_name()} has no post norm: set post_norm_cfg=None')


@MODELS.register_module()
class EffDinoTransformerDecoder(_RegistryStackMixin, DinoTransformerDecoder):
    """mmdet's ``DinoTransformerDecoder``, registry-aware."""
    default_layer = EffDeformableDetrTransformerDecoderLayer

    def _init_layers(self) -> None:
        self._build_layers()
        if self.post_norm_cfg is not None:
            raise ValueError(
                f'{self._get_name()} has no post norm: set post_norm_cfg=None')
        self.ref_point_head = MLP(PROPOSAL_EMBED_DIMS, self.embed_dims,
                                  self.embed_dims, 2)
        self.norm = nn.LayerNorm(self.embed_dims)
