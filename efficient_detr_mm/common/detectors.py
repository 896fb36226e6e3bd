"""Registry-aware DETR, Deformable-DETR and DINO detectors.

They are drop-in replacements of mmdet's classes (same constructor, same
parameter names, same outputs) whose ``_init_layers`` builds the positional
encoding, encoder and decoder through :func:`build_or_default`: a sub-config
with ``type`` comes from the registry, one without gives mmdet's class.  The
papers' detectors subclass these.

All three also check their configuration when built (``num_queries``;
feature levels of the multi-scale ones) and, in training, that inputs,
predictions and losses are finite (see :mod:`.checks`); the two-stage query
selection of DINO / Deformable-DETR copes with images that have fewer
encoder tokens than ``num_queries``.
"""
import contextlib
from typing import Dict, Union

import torch
from mmdet.models.detectors import DETR, DINO, DeformableDETR
from mmdet.models.layers import SinePositionalEncoding
from mmdet.registry import MODELS
from mmdet.structures import OptSampleList
from torch import Tensor, nn

from .builder import build_or_default, reinit_custom_modules
from .checks import (check_feature_levels, check_finite_inputs,
                     check_finite_losses, check_num_queries, guard_assigner,
                     pad_proposals)
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


class CheckedDetectorMixin:
    """Build-time and training-time checks shared by every detector of the
    package: ``num_queries`` is validated, the head's assigner refuses
    non-finite predictions / ground truth with a clear message, and
    ``mode='loss'`` checks the input images and the losses."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        guard_assigner(self.bbox_head)

    def forward(self,
                inputs: Tensor,
                data_samples: OptSampleList = None,
                mode: str = 'tensor') -> Union[Dict, list, tuple, Tensor]:
        if mode != 'loss':
            return super().forward(inputs, data_samples, mode)
        check_finite_inputs(inputs, data_samples)
        losses = super().forward(inputs, data_samples, mode)
        check_finite_losses(losses)
        return losses


class TwoStageQueriesMixin:
    """The top-``num_queries`` selection of the two-stage DINO /
    Deformable-DETR on an image with fewer encoder tokens than queries:
    while :meth:`pre_decoder` runs, the encoder proposals are padded with
    padded-token candidates (memory 0, proposal +inf, what mmdet gives a
    padded position of a batched image), so the selection and everything
    after it keep their shapes."""

    _min_proposals = 0

    @contextlib.contextmanager
    def _proposals_at_least(self, n: int):
        self._min_proposals = n
        try:
            yield
        finally:
            self._min_proposals = 0

    def pre_decoder(self, memory: Tensor, *args, **kwargs):
        with self._proposals_at_least(self.num_queries):
            return super().pre_decoder(memory, *args, **kwargs)

    def gen_encoder_output_proposals(self, memory: Tensor,
                                     memory_mask: Tensor,
                                     spatial_shapes: Tensor) -> tuple:
        output_memory, output_proposals = \
            super().gen_encoder_output_proposals(memory, memory_mask,
                                                 spatial_shapes)
        return pad_proposals(output_memory, output_proposals,
                             self._min_proposals)


@MODELS.register_module()
class EffDETR(CheckedDetectorMixin, DETR):
    """mmdet's :class:`DETR` with registry-built encoder / decoder."""

    def _init_layers(self) -> None:
        check_num_queries(self)
        _build_transformer(self, EffDetrTransformerEncoder,
                           EffDetrTransformerDecoder)
        self.query_embedding = nn.Embedding(self.num_queries, self.embed_dims)

    def init_weights(self) -> None:
        super().init_weights()
        reinit_custom_modules(self.encoder, self.decoder)


@MODELS.register_module()
class EffDeformableDETR(CheckedDetectorMixin, TwoStageQueriesMixin,
                        DeformableDETR):
    """mmdet's :class:`DeformableDETR` with registry-built encoder / decoder.
    """

    def _init_layers(self) -> None:
        check_num_queries(self)
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
        check_feature_levels(self)

    def init_weights(self) -> None:
        super().init_weights()
        reinit_custom_modules(self.encoder, self.decoder)


@MODELS.register_module()
class EffDINO(CheckedDetectorMixin, TwoStageQueriesMixin, DINO):
    """mmdet's :class:`DINO` with registry-built encoder / decoder."""

    def _init_layers(self) -> None:
        check_num_queries(self)
        _build_transformer(self, EffDeformableDetrTransformerEncoder,
                           EffDinoTransformerDecoder)
        # DINO's query embedding holds the content queries only
        self.query_embedding = nn.Embedding(self.num_queries, self.embed_dims)
        self.level_embed = nn.Parameter(
            torch.Tensor(self.num_feature_levels, self.embed_dims))
        self.memory_trans_fc = nn.Linear(self.embed_dims, self.embed_dims)
        self.memory_trans_norm = nn.LayerNorm(self.embed_dims)
        check_feature_levels(self)

    def init_weights(self) -> None:
        super().init_weights()
        reinit_custom_modules(self.encoder, self.decoder)
