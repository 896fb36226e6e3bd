"""SMCA-DETR: single-scale (C5) and multi-scale (strides 16 / 32 / 64)."""
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from mmdet.models.layers import SinePositionalEncoding
from mmdet.registry import MODELS
from mmdet.structures import OptSampleList
from torch import Tensor, nn

from ..common import EffDETR, EffDetrTransformerEncoder, build_or_default
from ..common.checks import check_feature_strides, check_num_queries
from .layers import SMCADecoder


@MODELS.register_module()
class SMCADETR(EffDETR):
    """SMCA-DETR on the registry-aware DETR base.

    Single-scale (``feat_strides=(32,)``, the default): DETR with the
    :class:`SMCADecoder` and :class:`SMCAHead`. Multi-scale
    (``feat_strides=(16, 32, 64)``): the last ``len(feat_strides)`` neck
    outputs are flattened and concatenated (levels carry a learnable level
    embedding added to the sine position encoding), the encoder must take
    ``spatial_shapes`` (:class:`SMCAMultiScaleEncoder`) and the decoder's
    Gaussians need ``gaussian_cfg.num_levels == len(feat_strides)``.

    The decoder receives each image's unpadded (w, h) from ``img_shape``.

    Args:
        feat_strides (Sequence[int]): Stride of each used feature level.
        Others as mmdet's ``DETR``.
    """

    def __init__(self, *args, feat_strides: Sequence[int] = (32, ),
                 **kwargs) -> None:
        self.feat_strides = tuple(int(s) for s in feat_strides)
        if not self.feat_strides:
            raise ValueError('feat_strides must name at least one stride')
        super().__init__(*args, **kwargs)

    @property
    def num_levels(self) -> int:
        return len(self.feat_strides)

    def _init_layers(self) -> None:
        check_num_queries(self)
        self.positional_encoding = build_or_default(self.positional_encoding,
                                                    SinePositionalEncoding)
        self.encoder = build_or_default(self.encoder,
                                        EffDetrTransformerEncoder)
        self.decoder = build_or_default(self.decoder, SMCADecoder)
        self.embed_dims = self.encoder.embed_dims
        self.query_embedding = nn.Embedding(self.num_queries, self.embed_dims)
        num_feats = self.positional_encoding.num_feats
        if num_feats * 2 != self.embed_dims:
            raise ValueError(
                'positional_encoding.num_feats must be embed_dims / 2, got '
                f'num_feats={num_feats} and embed_dims={self.embed_dims}')
        levels = self.decoder.layers[0].gaussian.num_levels
        if levels != self.num_levels:
            raise ValueError(
                f'decoder.layer_cfg.gaussian_cfg.num_levels ({levels}) must '
                f'equal len(feat_strides) ({self.num_levels}, feat_strides='
                f'{self.feat_strides})')
        self.multi_scale_encoder = hasattr(self.encoder, 'layer_types')
        if self.num_levels > 1:
            if not self.multi_scale_encoder:
                raise ValueError(
                    'multi-scale SMCA (feat_strides=' f'{self.feat_strides})'
                    ' needs encoder.type=\'SMCAMultiScaleEncoder\'')
            self.level_embed = nn.Parameter(
                torch.zeros(self.num_levels, self.embed_dims))
        check_feature_strides(self, self.feat_strides)

    def init_weights(self) -> None:
        super().init_weights()
        if self.num_levels > 1:
            nn.init.normal_(self.level_embed)

    def pre_transformer(
            self,
            img_feats: Tuple[Tensor],
            batch_data_samples: OptSampleList = None) -> Tuple[Dict, Dict]:
        """Flatten the used levels, build padding masks (None when every
        image fills the batch shape), position (+ level) embeddings, and
        the per-image unpadded (w, h).

        Returns:
            tuple[dict, dict]: encoder inputs (``feat``, ``feat_mask``,
            ``feat_pos`` and, multi-scale, ``spatial_shapes``) and decoder
            inputs (``memory_mask``, ``memory_pos``, ``img_wh``,
            ``spatial_shapes``).
        """
        assert batch_data_samples is not None
        feats = img_feats[-self.num_levels:]
        if len(feats) != self.num_levels:
            raise ValueError(f'{self.num_levels} feature levels expected '
                             f'(feat_strides), the neck gave {len(img_feats)}')
        bs = feats[0].shape[0]
        input_h, input_w = batch_data_samples[0].batch_input_shape
        shapes = [s.img_shape for s in batch_data_samples]
        same = all(s[0] == input_h and s[1] == input_w for s in shapes)
        img_masks = None
        if not (torch.onnx.is_in_onnx_export() or same):
            img_masks = feats[0].new_ones((bs, input_h, input_w))
            for i, (h, w) in enumerate(shapes):
                img_masks[i, :h, :w] = 0
        flat, masks, poses, spatial_shapes = [], [], [], []
        for lvl, feat in enumerate(feats):
            if img_masks is None:
                mask = None
                pos = self.positional_encoding(None, input=feat)
            else:
                mask = F.interpolate(
                    img_masks[:, None], size=feat.shape[-2:]).to(
                        torch.bool).squeeze(1)
                pos = self.positional_encoding(mask)
            c = feat.shape[1]
            pos = pos.view(bs, c, -1).permute(0, 2, 1)
            if self.num_levels > 1:
                pos = pos + self.level_embed[lvl].view(1, 1, -1)
            flat.append(feat.view(bs, c, -1).permute(0, 2, 1))
            poses.append(pos)
            masks.append(mask.view(bs, -1) if mask is not None else None)
            spatial_shapes.append(tuple(feat.shape[-2:]))
        feat = torch.cat(flat, 1) if len(flat) > 1 else flat[0]
        pos = torch.cat(poses, 1) if len(poses) > 1 else poses[0]
        mask = (None if masks[0] is None else
                torch.cat(masks, 1) if len(masks) > 1 else masks[0])
        img_wh = feat.new_tensor([[s[1], s[0]] for s in shapes])
        encoder_inputs = dict(feat=feat, feat_mask=mask, feat_pos=pos)
        if self.multi_scale_encoder:
            encoder_inputs['spatial_shapes'] = spatial_shapes
        decoder_inputs = dict(
            memory_mask=mask,
            memory_pos=pos,
            img_wh=img_wh,
            spatial_shapes=spatial_shapes)
        return encoder_inputs, decoder_inputs

    def forward_encoder(self,
                        feat: Tensor,
                        feat_mask: Optional[Tensor],
                        feat_pos: Tensor,
                        spatial_shapes: Optional[List[tuple]] = None
                        ) -> Dict:
        kwargs = {} if spatial_shapes is None else dict(
            spatial_shapes=spatial_shapes)
        memory = self.encoder(
            query=feat, query_pos=feat_pos, key_padding_mask=feat_mask,
            **kwargs)
        return dict(memory=memory)

    def forward_decoder(self, query: Tensor, query_pos: Tensor,
                        memory: Tensor, memory_mask: Optional[Tensor],
                        memory_pos: Tensor, img_wh: Tensor,
                        spatial_shapes: List[tuple]) -> Dict:
        """
        Returns:
            dict: ``hidden_states`` (num_layers, bs, nq, C) and
            ``references``, the pre-sigmoid centres (bs, nq, 2).
        """
        hidden_states, ref_logit = self.decoder(
            query=query,
            key=memory,
            value=memory,
            query_pos=query_pos,
            key_pos=memory_pos,
            key_padding_mask=memory_mask,
            img_wh=img_wh,
            spatial_shapes=spatial_shapes,
            strides=self.feat_strides)
        return dict(hidden_states=hidden_states, references=ref_logit)
