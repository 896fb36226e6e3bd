"""SMCA's box head: boxes regressed relative to the Gaussian centres."""
from typing import Tuple

import torch
from mmdet.models.dense_heads import ConditionalDETRHead
from mmdet.registry import MODELS
from mmdet.structures.bbox import bbox_cxcywh_to_xyxy
from mmengine.structures import InstanceData
from torch import Tensor


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
        clip = (self.test_cfg or {}).get('clip_boxes', False)
        if not isinstance(clip, bool):
            raise TypeError(
                f'test_cfg.clip_boxes must be True or False, got {clip!r}')
        self.clip_boxes = clip

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
        h, w = img_meta['img_shape'][:2]
        bboxes = bbox_cxcywh_to_xyxy(bbox_pred[indexes // self.num_classes])
        bboxes = bboxes * bboxes.new_tensor([w, h, w, h])
        if rescale:
            assert img_meta.get('scale_factor') is not None
            bboxes = bboxes / bboxes.new_tensor(
                img_meta['scale_factor']).repeat((1, 2))
        results = InstanceData()
        results.bboxes = bboxes
        results.scores = scores
        results.labels = indexes % self.num_classes
        return results
