"""SMCA's box head: boxes regressed relative to the Gaussian centres."""
from typing import Tuple

import torch
from mmdet.models.dense_heads import ConditionalDETRHead
from mmdet.registry import MODELS
from mmengine.structures import InstanceData
from torch import Tensor

from ..common.heads import clip_boxes_option, unclipped_results


@MODELS.register_module()
class SMCAHead(ConditionalDETRHead):
    """ConditionalDETRHead whose ``references`` are already pre-sigmoid.

    For every decoder layer: ``box = sigmoid(reg(h) + [ref_logit, 0, 0])``
    with the same first-layer ``ref_logit`` for all layers (official code);
    no inverse sigmoid (and so no clamping) is applied to the reference.
    Focal-loss bias init as ConditionalDETRHead.

    Post-processing (official ``PostProcess``): the top ``max_per_img`` of
    all (query, class) sigmoid scores, boxes scaled to the image. The
    official code does not clip boxes to the image; ``test_cfg.clip_boxes``
    (default ``False``, the official behaviour) clips them as mmdet's
    ``DETRHead`` does (which also serves a softmax ``loss_cls``).
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.clip_boxes = clip_boxes_option(self.test_cfg, False)

    def forward(self, hidden_states: Tensor,
                references: Tensor) -> Tuple[Tensor, Tensor]:
        """
        Args:
            hidden_states (Tensor): (num_layers, bs, nq, C).
            references (Tensor): (bs, nq, 2) pre-sigmoid centres (x, y).

        Returns:
            tuple: class scores (num_layers, bs, nq, num_classes) and boxes
            (num_layers, bs, nq, 4) as normalised (cx, cy, w, h).
        """
        reg = self.fc_reg(self.activate(self.reg_ffn(hidden_states)))
        offset = torch.cat(
            [references, references.new_zeros(references.shape)], dim=-1)
        layers_bbox_preds = (reg + offset[None]).sigmoid()
        layers_cls_scores = self.fc_cls(hidden_states)
        return layers_cls_scores, layers_bbox_preds

    def _predict_by_feat_single(self,
                                cls_score: Tensor,
                                bbox_pred: Tensor,
                                img_meta: dict,
                                rescale: bool = True) -> InstanceData:
        """Top ``max_per_img`` (query, class) pairs by sigmoid score; boxes
        scaled by ``img_shape`` (then divided by ``scale_factor`` when
        ``rescale``), clipped only if ``test_cfg.clip_boxes``."""
        if self.clip_boxes or not self.loss_cls.use_sigmoid:
            return super()._predict_by_feat_single(cls_score, bbox_pred,
                                                   img_meta, rescale)
        max_per_img = self.test_cfg.get('max_per_img', len(cls_score))
        scores, indexes = cls_score.sigmoid().view(-1).topk(max_per_img)
        return unclipped_results(bbox_pred[indexes // self.num_classes],
                                 scores, indexes % self.num_classes,
                                 img_meta, rescale)
