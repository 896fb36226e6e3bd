"""SMCA decoder (single- and multi-scale) and the multi-scale encoder."""
from typing import Optional, Sequence, Tuple

import torch
from mmdet.models.layers.transformer.utils import MLP
from mmdet.registry import MODELS
from mmdet.utils import ConfigType, OptConfigType
from torch import Tensor

from ..common import (EffDetrTransformerDecoder,
                      EffDetrTransformerDecoderLayer,
                      EffDetrTransformerEncoder)
from .attention import SMCACoAttention
from .gaussian import SMCAGaussian

LAYER_TYPES = ('intra', 'multi')


@MODELS.register_module()
class SMCADecoderLayer(EffDetrTransformerDecoderLayer):
    """DETR post-norm decoder layer whose cross-attention is spatially
    modulated.

    Adds ``norms[3]`` (the official ``norm4``): the Gaussian parameters of
    the layer are predicted from ``LN(query + query_pos)``, the layer's input
    before self-attention, and ``gaussian`` (:class:`SMCAGaussian`).

    Args:
        gaussian_cfg (dict, optional): kwargs of :class:`SMCAGaussian`
            except ``embed_dims`` / ``num_heads`` (taken from the
            cross-attention): ``modulation``, ``beta``, ``num_levels``,
            ``level_multipliers``.
        Others as mmdet's ``DetrTransformerDecoderLayer``.
    """
    default_cross_attn = SMCACoAttention
    num_norms = 4

    def __init__(self, *args, gaussian_cfg: OptConfigType = None,
                 **kwargs) -> None:
        self.gaussian_cfg = dict(gaussian_cfg or {})
        super().__init__(*args, **kwargs)

    def _init_layers(self) -> None:
        super()._init_layers()
        self.gaussian = SMCAGaussian(
            embed_dims=self.embed_dims,
            num_heads=self.cross_attn.num_heads,
            **self.gaussian_cfg)

    def modulation_input(self, query: Tensor, query_pos: Tensor) -> Tensor:
        """``LN4(query + query_pos)``: what centres / offsets / scales /
        alpha are predicted from."""
        return self.norms[3](query + query_pos)

    def forward(self,
                query: Tensor,
                key: Tensor = None,
                value: Tensor = None,
                query_pos: Tensor = None,
                key_pos: Tensor = None,
                self_attn_mask: Tensor = None,
                cross_attn_mask: Tensor = None,
                key_padding_mask: Tensor = None,
                ref_centre: Tensor = None,
                img_wh: Tensor = None,
                spatial_shapes: Sequence[Tuple[int, int]] = None,
                strides: Sequence[int] = None,
                **kwargs) -> Tensor:
        """
        Args:
            query (Tensor): (bs, nq, C).
            key, value (Tensor): (bs, nk, C) memory.
            query_pos, key_pos (Tensor): positional embeddings.
            key_padding_mask (Tensor, optional): (bs, nk), True = padded.
            ref_centre (Tensor): (bs, nq, 2) normalised centres.
            img_wh (Tensor): (bs, 2) unpadded (w, h) of each image.
            spatial_shapes (Sequence[tuple]): (h, w) per level.
            strides (Sequence[int]): stride per level.

        Returns:
            Tensor: (bs, nq, C).
        """
        log_g, alpha = self.gaussian(
            self.modulation_input(query, query_pos), ref_centre, img_wh,
            spatial_shapes, strides)
        query = self.self_attn(
            query=query,
            key=query,
            value=query,
            query_pos=query_pos,
            key_pos=query_pos,
            attn_mask=self_attn_mask,
            **kwargs)
        query = self.norms[0](query)
        level_sizes = [h * w for h, w in spatial_shapes]
        query = self.cross_attn(
            query=query,
            key=key,
            value=value,
            query_pos=query_pos,
            key_pos=key_pos,
            attn_mask=cross_attn_mask,
            key_padding_mask=key_padding_mask,
            attn_bias=log_g,
            level_sizes=level_sizes if len(level_sizes) > 1 else None,
            level_weights=alpha,
            **kwargs)
        query = self.norms[1](query)
        query = self.ffn(query)
        query = self.norms[2](query)
        return query


@MODELS.register_module()
class SMCADecoder(EffDetrTransformerDecoder):
    """DETR decoder with spatially modulated co-attention.

    The first layer predicts each query's reference centre
    ``ref_logit = MLP3(LN4_0(query + query_pos))``; it is not refined, every
    layer reuses it (with its own offsets and scales). The decoder returns
    the stacked (post-normed) hidden states and ``ref_logit``, which the
    head adds to (cx, cy) before the sigmoid.
    """
    default_layer = SMCADecoderLayer

    def _init_layers(self) -> None:
        super()._init_layers()
        self.ref_point_head = MLP(self.embed_dims, self.embed_dims, 2, 3)

    def forward(self, query: Tensor, key: Tensor, value: Tensor,
                query_pos: Tensor, key_pos: Tensor,
                key_padding_mask: Optional[Tensor], img_wh: Tensor,
                spatial_shapes: Sequence[Tuple[int, int]],
                strides: Sequence[int], **kwargs) -> Tuple[Tensor, Tensor]:
        """
        Returns:
            tuple: hidden states (num_layers or 1, bs, nq, C) and the
            pre-sigmoid reference centres ``ref_logit`` (bs, nq, 2) as (x, y).
        """
        ref_logit = self.ref_point_head(self.layers[0].modulation_input(
            query, query_pos))
        ref_centre = ref_logit.sigmoid()
        intermediate = []
        for layer in self.layers:
            query = layer(
                query,
                key=key,
                value=value,
                query_pos=query_pos,
                key_pos=key_pos,
                key_padding_mask=key_padding_mask,
                ref_centre=ref_centre,
                img_wh=img_wh,
                spatial_shapes=spatial_shapes,
                strides=strides,
                **kwargs)
            if self.return_intermediate:
                intermediate.append(self.post_norm(query))
        if self.return_intermediate:
            return torch.stack(intermediate), ref_logit
        return self.post_norm(query).unsqueeze(0), ref_logit


@MODELS.register_module()
class SMCAMultiScaleEncoder(EffDetrTransformerEncoder):
    """The multi-scale SMCA encoder of the paper.

    A stack of DETR encoder layers, each either ``'intra'`` (run separately
    on every level's tokens with the same weights: attention within a
    scale, parameters shared across scales) or ``'multi'`` (one
    self-attention over the concatenation of all levels).

    Args:
        num_layers (int): Number of layers.
        layer_cfg (dict): Config of every layer (a DETR encoder layer).
        layer_types (Sequence[str]): ``'intra'`` / ``'multi'`` per layer;
            defaults to the paper's intra, intra, multi, intra, intra.
        num_cp (int): Layers with gradient checkpointing.
        init_cfg (dict, optional): Initialisation config.
    """

    def __init__(self,
                 num_layers: int,
                 layer_cfg: ConfigType,
                 layer_types: Sequence[str] = ('intra', 'intra', 'multi',
                                               'intra', 'intra'),
                 num_cp: int = -1,
                 init_cfg: OptConfigType = None) -> None:
        layer_types = tuple(layer_types)
        if len(layer_types) != num_layers or \
                any(t not in LAYER_TYPES for t in layer_types):
            raise ValueError(
                f'encoder.layer_types must list one of {LAYER_TYPES} for '
                f'each of the num_layers={num_layers} layers, got '
                f'{layer_types}')
        self.layer_types = layer_types
        super().__init__(
            num_layers=num_layers,
            layer_cfg=layer_cfg,
            num_cp=num_cp,
            init_cfg=init_cfg)

    def forward(self, query: Tensor, query_pos: Tensor,
                key_padding_mask: Optional[Tensor],
                spatial_shapes: Sequence[Tuple[int, int]],
                **kwargs) -> Tensor:
        """
        Args:
            query (Tensor): (bs, sum h*w, C), levels concatenated.
            query_pos (Tensor): (bs, sum h*w, C) with level embeddings.
            key_padding_mask (Tensor, optional): (bs, sum h*w).
            spatial_shapes (Sequence[tuple]): (h, w) per level.

        Returns:
            Tensor: (bs, sum h*w, C).
        """
        sizes = [h * w for h, w in spatial_shapes]
        pos_l = query_pos.split(sizes, dim=1)
        mask_l = (key_padding_mask.split(sizes, dim=1)
                  if key_padding_mask is not None else [None] * len(sizes))
        for layer, kind in zip(self.layers, self.layer_types):
            if kind == 'multi':
                query = layer(
                    query=query,
                    query_pos=query_pos,
                    key_padding_mask=key_padding_mask,
                    **kwargs)
            else:
                query = torch.cat([
                    layer(query=q, query_pos=p, key_padding_mask=m, **kwargs)
                    for q, p, m in zip(
                        query.split(sizes, dim=1), pos_l, mask_l)
                ], dim=1)
        return query
