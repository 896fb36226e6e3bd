"""Registry-aware DETR, Deformable-DETR and DINO detectors.

They are drop-in replacements of mmdet's classes (same constructor, same
parameter names, same outputs) whose ``_init_layers`` builds the positional
encoding, encoder and decoder through :func:`build_or_default`: a sub-config
with ``type`` comes from the registry, one without gives mmdet's class.  The
papers' detectors subclass these.
"""
import torch
from mmdet.models.detectors import DETR, DINO, DeformableDETR
from mmdet.models.layers import SinePositionalEncoding
from mmdet.registry import MODELS
from torch import nn

from .builder import build_or_default, reinit_custom_modules
from .layers import (PROPOSAL_EMBED_DIMS, EffDeformableDetrTransformerDecoder,
                     EffDeformableDetrTransformerEncoder,
                     EffDetrTransformerDecoder, EffDetrTransformerEncoder,
                     EffDinoTransformerDecoder)


def _build_transformer(detector: nn.Module, default_encoder: type,
                       default_decoder: type) -> None:
    """Replace the stored sub-configs of ``detector`` with built modules and
    check the positional-encoding width, as mmdet's ``_init_layers`` do."""
    detector.positional_encoding = build_or_default(
        detector.positional_encoding, SinePositionalEncoding)
    detector.encoder = build_or_default(detector.encoder, default_encoder)
    detector.decoder = build_or_default(detector.decoder, default_decoder)
    detector.embed_dims = detector.encoder.embed_dims
    num_feats = detector.positional_encoding.num_feats
    if num_feats * 2 != detector.embed_dims:
        raise ValueError(
            'positional_encoding.num_feats must be embed_dims / 2, got '
            f'num_feats={num_feats} and embed_dims={detector.embed_dims}')


@MODELS.register_module()
class EffDETR(DETR):
    """mmdet's :class:`DETR` with registry-built encoder / decoder."""

    def _init_layers(self) -> None:
        _build_transformer(self, EffDetrTransformerEncoder,
                           EffDetrTransformerDecoder)
        self.query_embedding = nn.Embedding(self.num_queries, self.embed_dims)

    def init_weights(self) -> None:
        super().init_weights()
        reinit_custom_modules(self.encoder, self.decoder)


@MODELS.register_module()
class EffDeformableDETR(DeformableDETR):
    """mmdet's :class:`DeformableDETR` with registry-built encoder / decoder.
    """

    def _init_layers(self) -> None:
        _build_transformer(self, EffDeformableDetrTransformerEncoder,
                           EffDeformableDetrTransformerDecoder)
        if not self.as_two_stage:
            # split into query_pos and query in pre_decoder
            self.query_embedding = nn.Embedding(self.num_queries,
                                                self.embed_dims * 2)
        self.level_embed = nn.Parameter(
            torch.Tensor(self.num_feature_levels, self.embed_dims))
        if self.as_two_stage:
            self.memory_trans_fc = nn.Linear(self.embed_dims, self.embed_dims)
            self.memory_trans_norm = nn.LayerNorm(self.embed_dims)
            # mmdet's get_proposal_pos_embed always gives 4 x 128 features;
            # 4 x 128 == 2 x embed_dims in mmdet's (256-d only) layout
            self.pos_trans_fc = nn.Linear(PROPOSAL_EMBED_DIMS,
                                          self.embed_dims * 2)
            self.pos_trans_norm = nn.LayerNorm(self.embed_dims * 2)
        else:
            self.reference_points_fc = nn.Linear(self.embed_dims, 2)

    def init_weights(self) -> None:
        super().init_weights()
        reinit_custom_modules(self.encoder, self.decoder)


@MODELS.register_module()
class EffDINO(DINO):
    """mmdet's :class:`DINO` with registry-built encoder / decoder."""

    def _init_layers(self) -> None:
        _build_transformer(self, EffDeformableDetrTransformerEncoder,
                           EffDinoTransformerDecoder)
        # DINO's query embedding holds the content queries only
        self.query_embedding = nn.Embedding(self.num_queries, self.embed_dims)
        self.level_embed = nn.Parameter(
            torch.Tensor(self.num_feature_levels, self.embed_dims))
        self.memory_trans_fc = nn.Linear(self.embed_dims, self.embed_dims)
        self.memory_trans_norm = nn.LayerNorm(self.embed_dims)

    def init_weights(self) -> None:
        super().init_weights()
        reinit_custom_modules(self.encoder, self.decoder)
