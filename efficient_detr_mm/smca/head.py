"""SMCA's box head: boxes regressed relative to the Gaussian centres."""
from typing import Tuple

import torch
from mmdet.models.dense_heads import ConditionalDETRHead
from mmdet.registry import MODELS
from torch import Tensor


@MODELS.register_module()
class SMCAHead(ConditionalDETRHead):
    """ConditionalDETRHead whose ``references`` are already pre-sigmoid.

    For every decoder layer: ``box = sigmoid(reg(h) + [ref_logit, 0, 0])``
    with the same first-layer ``ref_logit`` for all layers (official code);
    no inverse sigmoid (and so no clamping) is applied to the reference.
    Focal-loss bias init as ConditionalDETRHead.
    """

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
