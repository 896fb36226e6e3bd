"""Focus-DETR detector: DINO with the Foreground Token Selector and the
dual-attention encoder."""
import copy
from typing import Dict, Optional, Tuple

from mmdet.registry import MODELS
from mmdet.structures import OptSampleList, SampleList
from mmdet.utils import OptConfigType
from torch import Tensor

from ..common.detectors import EffDINO
from ..common.masks import valid_mask

#: encoder-output keys that never reach mmdet's pre_decoder / head
_FTS_KEYS = ('fts_logits', 'fts_selection')


@MODELS.register_module()
class FocusDETR(EffDINO):
    """Focus-DETR ("Less is More: Focus Attention for Efficient DETR",
    ICCV 2023) on mmdet's DINO.

    Before the encoder, DINO's own ``memory_trans_fc/norm`` of
    ``feature + position`` (invalid proposals and padding zeroed, i.e.
    ``gen_encoder_output_proposals``) feed the selector, which scores every
    token and picks the nested foreground sets of the encoder layers. The
    encoder (a :class:`FocusEncoder`) updates only those sets and keeps the
    full-length memory, so DINO's query selection, decoder and head are
    unchanged. Training adds the FTS focal loss ``loss_fts``.

    Args:
        selector (dict): config of the :class:`ForegroundTokenSelector`;
            ``embed_dims`` and ``num_levels`` are filled in.
        fts_loss (dict): config of the :class:`FTSLoss`.
        *args, **kwargs: as mmdet's :class:`DINO`; ``encoder`` should be a
            ``FocusEncoder`` (or compatible) config.
    """

    def __init__(self,
                 *args,
                 selector: OptConfigType = dict(
                     type='ForegroundTokenSelector'),
                 fts_loss: OptConfigType = dict(type='FTSLoss'),
                 **kwargs) -> None:
        super().__init__(*args, **kwargs)
        selector = copy.deepcopy(dict(selector))
        selector.setdefault('type', 'ForegroundTokenSelector')
        for key, val in (('embed_dims', self.embed_dims),
                         ('num_levels', self.num_feature_levels)):
            if selector.setdefault(key, val) != val:
                raise ValueError(f'FocusDETR: selector.{key}={selector[key]}'
                                 f' does not match the detector ({val})')
        self.selector = MODELS.build(selector)
        if self.selector.num_layers != self.encoder.num_layers:
            raise ValueError(
                f'FocusDETR: selector.cascade has {self.selector.num_layers} '
                f'entries but the encoder has {self.encoder.num_layers} '
                'layers; give one entry per encoder layer')
        fts_loss = copy.deepcopy(dict(fts_loss))
        fts_loss.setdefault('type', 'FTSLoss')
        self.fts_loss = MODELS.build(fts_loss)
        if len(self.fts_loss.strides) != self.num_feature_levels:
            raise ValueError(
                f'FocusDETR: fts_loss.strides has '
                f'{len(self.fts_loss.strides)} entries for '
                f'{self.num_feature_levels} feature levels')

    def init_weights(self) -> None:
        super().init_weights()
        self.selector.init_weights()

    def select_tokens(self, feat: Tensor, feat_mask: Optional[Tensor],
                      feat_pos: Tensor, spatial_shapes: Tensor) -> Dict:
        """Run the FTS: score every token and pick the layers' sets.

        Returns:
            dict: ``fts_logits`` (bs, N) and ``fts_selection`` (see
            :meth:`ForegroundTokenSelector.select`).
        """
        z, _ = self.gen_encoder_output_proposals(feat + feat_pos, feat_mask,
                                                 spatial_shapes)
        valid = valid_mask(feat_mask, feat.shape[0], feat.shape[1],
                           feat.device)
        logits = self.selector.score(
            z, spatial_shapes, None if feat_mask is None else valid)
        return dict(
            fts_logits=logits,
            fts_selection=self.selector.select(logits, feat_mask))

    def forward_encoder(self, feat: Tensor, feat_mask: Tensor,
                        feat_pos: Tensor, spatial_shapes: Tensor,
                        level_start_index: Tensor,
                        valid_ratios: Tensor) -> Dict:
        """FTS + Focus encoder.

        Returns:
            dict: ``memory`` (bs, N, C), ``memory_mask``, ``spatial_shapes``
            (mmdet's keys) plus ``fts_logits`` and ``fts_selection``, which
            :meth:`forward_transformer` removes.
        """
        fts = self.select_tokens(feat, feat_mask, feat_pos, spatial_shapes)
        memory = self.encoder(
            query=feat,
            query_pos=feat_pos,
            key_padding_mask=feat_mask,
            spatial_shapes=spatial_shapes,
            level_start_index=level_start_index,
            valid_ratios=valid_ratios,
            selection=fts['fts_selection'],
            fg_logits=fts['fts_logits'],
            cls_branch=self.bbox_head.cls_branches[self.decoder.num_layers])
        return dict(
            memory=memory,
            memory_mask=feat_mask,
            spatial_shapes=spatial_shapes,
            **fts)

    def forward_transformer(self,
                            img_feats: Tuple[Tensor],
                            batch_data_samples: OptSampleList = None
                            ) -> Dict:
        """DINO's transformer; in training the head dict also carries
        ``fts_outputs`` (consumed by :meth:`loss`), in eval nothing extra.
        """
        encoder_inputs_dict, decoder_inputs_dict = self.pre_transformer(
            img_feats, batch_data_samples)
        encoder_outputs_dict = self.forward_encoder(**encoder_inputs_dict)
        fts = {k: encoder_outputs_dict.pop(k) for k in _FTS_KEYS}
        tmp_dec_in, head_inputs_dict = self.pre_decoder(
            **encoder_outputs_dict, batch_data_samples=batch_data_samples)
        decoder_inputs_dict.update(tmp_dec_in)
        decoder_outputs_dict = self.forward_decoder(**decoder_inputs_dict)
        head_inputs_dict.update(decoder_outputs_dict)
        if self.training:
            fts['spatial_shapes'] = encoder_inputs_dict['spatial_shapes']
            fts['valid'] = fts['fts_selection']['valid']
            head_inputs_dict['fts_outputs'] = fts
        return head_inputs_dict

    def loss(self, batch_inputs: Tensor,
             batch_data_samples: SampleList) -> Dict:
        """DINO's losses plus ``loss_fts``."""
        img_feats = self.extract_feat(batch_inputs)
        head_inputs_dict = self.forward_transformer(img_feats,
                                                    batch_data_samples)
        fts = head_inputs_dict.pop('fts_outputs')
        losses = self.bbox_head.loss(
            **head_inputs_dict, batch_data_samples=batch_data_samples)
        targets = self.fts_loss.get_targets(fts['spatial_shapes'],
                                            batch_data_samples)
        losses['loss_fts'] = self.fts_loss(fts['fts_logits'], targets,
                                           fts['valid'])
        return losses
