"""DINO head with the two options the official DINO code bases need; DETR
head with the official DETR post-processing option."""
import copy
import inspect
from typing import List, Tuple

import torch
import torch.nn.functional as F
from mmdet.models.dense_heads import DETRHead, DINOHead
from mmdet.models.layers import inverse_sigmoid
from mmdet.registry import MODELS
from mmdet.structures.bbox import bbox_cxcywh_to_xyxy
from mmengine.structures import InstanceData
from torch import Tensor, nn

from .checks import check_bool


def clip_boxes_option(test_cfg, default: bool) -> bool:
    """``test_cfg.clip_boxes`` (whether boxes are clipped to the image as
    mmdet's heads do; the official DETR-family post-processing does not),
    checked to be a bool."""
    return check_bool('test_cfg.clip_boxes',
                      (test_cfg or {}).get('clip_boxes', default))


def unclipped_results(bbox_pred: Tensor, scores: Tensor, labels: Tensor,
                      img_meta: dict, rescale: bool) -> InstanceData:
    """Detections as the official ``PostProcess`` gives them: normalised
    (cx, cy, w, h) ``bbox_pred`` scaled to ``img_shape`` (then divided by
    ``scale_factor`` when ``rescale``), never clipped to the image."""
    h, w = img_meta['img_shape'][:2]
    bboxes = bbox_cxcywh_to_xyxy(bbox_pred)
    bboxes = bboxes * bboxes.new_tensor([w, h, w, h])
    if rescale:
        assert img_meta.get('scale_factor') is not None
        bboxes = bboxes / bboxes.new_tensor(
            img_meta['scale_factor']).repeat((1, 2))
    results = InstanceData()
    results.bboxes = bboxes
    results.scores = scores
    results.labels = labels
    return results


@MODELS.register_module()
class EffDINOHead(DINOHead):
    """mmdet's :class:`DINOHead` with the official DINO head layout options.

    With the defaults it is mmdet's ``DINOHead``: same modules, same
    state-dict names, bit-identical outputs.

    Args:
        inverse_sigmoid_eps (float): ``eps`` of the ``inverse_sigmoid`` that
            turns each layer's reference box back into logits before the box
            delta is added. mmdet's ``DeformableDETRHead`` uses 1e-5; the
            official DINO / Lite-DETR / detrex code uses 1e-3 (the same value
            mmdet's ``DinoTransformerDecoder`` already uses to refine the
            references between layers). The two differ only where a
            reference coordinate is below ``eps`` or above ``1 - eps``.
            Defaults to 1e-5.
        dec_pred_class_embed_share (bool): one classification layer shared
            by all decoder layers (official ``dec_pred_class_embed_share``).
            The encoder-output (two-stage proposal) classifier,
            ``cls_branches[num_decoder_layers]``, stays a separate layer, as
            the official ``enc_out_class_embed``. Defaults to False.
        dec_pred_bbox_embed_share (bool): the same for the box MLP
            (official ``dec_pred_bbox_embed_share``, encoder-output box MLP
            ``reg_branches[num_decoder_layers]`` = ``enc_out_bbox_embed``
            separate). Defaults to False.
        *args, **kwargs: the arguments of mmdet's ``DINOHead``.

    Note:
        mmdet's ``share_pred_layer=True`` (set by the detector when
        ``with_box_refine=False``) shares the encoder-output branch too,
        which is not the official layout. With sharing the state dict keeps
        mmdet's names: ``cls_branches.0`` ... ``cls_branches.{L-1}`` are the
        same tensor, so checkpoints of either layout load into the other
        (into the shared layout only if those copies are equal).
    """

    def __init__(self,
                 *args,
                 inverse_sigmoid_eps: float = 1e-5,
                 dec_pred_class_embed_share: bool = False,
                 dec_pred_bbox_embed_share: bool = False,
                 **kwargs) -> None:
        eps = inverse_sigmoid_eps
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) \
                or not 0 < eps < 0.5:
            raise ValueError('inverse_sigmoid_eps must be a number in '
                             f'(0, 0.5), got {inverse_sigmoid_eps!r}')
        self.inverse_sigmoid_eps = float(inverse_sigmoid_eps)
        self.dec_pred_class_embed_share = check_bool(
            'dec_pred_class_embed_share', dec_pred_class_embed_share)
        self.dec_pred_bbox_embed_share = check_bool(
            'dec_pred_bbox_embed_share', dec_pred_bbox_embed_share)
        super().__init__(*args, **kwargs)

    @property
    def num_decoder_pred_layers(self) -> int:
        """Number of branches that serve decoder layers (the last branch
        serves the encoder output when ``as_two_stage``)."""
        return self.num_pred_layer - 1 if self.as_two_stage \
            else self.num_pred_layer

    def _init_layers(self) -> None:
        """Build the branches; share the decoder-layer ones if asked."""
        super()._init_layers()
        sharing = (self.dec_pred_class_embed_share
                   or self.dec_pred_bbox_embed_share)
        if not sharing:
            return
        if self.share_pred_layer:
            raise ValueError(
                'dec_pred_class_embed_share / dec_pred_bbox_embed_share need '
                'share_pred_layer=False (the detector sets share_pred_layer '
                '= not with_box_refine; share_pred_layer=True already shares '
                'every branch, the encoder-output one included)')
        num_dec = self.num_decoder_pred_layers
        if self.dec_pred_class_embed_share:
            self.cls_branches = self._shared(self.cls_branches, num_dec)
        if self.dec_pred_bbox_embed_share:
            self.reg_branches = self._shared(self.reg_branches, num_dec)

    @staticmethod
    def _shared(branches: nn.ModuleList, num_dec: int) -> nn.ModuleList:
        """``branches[0]`` for the ``num_dec`` decoder layers, the others
        (the encoder-output branch) kept."""
        return nn.ModuleList([branches[0]] * num_dec +
                             list(branches[num_dec:]))

    def forward(self, hidden_states: Tensor,
                references: List[Tensor]) -> Tuple[Tensor, Tensor]:
        """mmdet's ``DeformableDETRHead.forward`` with
        ``inverse_sigmoid(reference, eps=inverse_sigmoid_eps)``.

        Args:
            hidden_states (Tensor): (num_decoder_layers, bs, num_queries,
                dim).
            references (list[Tensor]): the initial reference and those after
                each decoder layer (the last one is not used), (bs,
                num_queries, 4) or (bs, num_queries, 2), sigmoid space.

        Returns:
            tuple[Tensor, Tensor]: class scores (num_decoder_layers, bs,
            num_queries, cls_out_channels) and sigmoid boxes (cx, cy, w, h)
            (num_decoder_layers, bs, num_queries, 4).
        """
        all_classes, all_coords = [], []
        for layer_id in range(hidden_states.shape[0]):
            reference = inverse_sigmoid(
                references[layer_id], eps=self.inverse_sigmoid_eps)
            hidden_state = hidden_states[layer_id]
            outputs_class = self.cls_branches[layer_id](hidden_state)
            tmp_reg_preds = self.reg_branches[layer_id](hidden_state)
            if reference.shape[-1] == 4:
                tmp_reg_preds += reference
            else:
                assert reference.shape[-1] == 2
                tmp_reg_preds[..., :2] += reference
            all_classes.append(outputs_class)
            all_coords.append(tmp_reg_preds.sigmoid())
        return torch.stack(all_classes), torch.stack(all_coords)


@MODELS.register_module()
class EffDETRHead(DETRHead):
    """mmdet's :class:`DETRHead` with the official DETR post-processing as an
    option: ``test_cfg.clip_boxes``.

    mmdet clips the boxes to the image; the official ``PostProcess``
    (facebookresearch/detr) does not.  ``clip_boxes=True`` (default) is
    mmdet's ``DETRHead`` exactly; ``False`` returns the official boxes
    (softmax scores over the classes without the background, the top
    ``max_per_img`` queries, boxes scaled to ``img_shape`` and divided by
    ``scale_factor`` when ``rescale``, never clipped).  Same parameters and
    losses as ``DETRHead``.
    """

    def __init__(self, num_classes: int, *args, **kwargs) -> None:
        # DETRHead turns loss_cls's class_weight / bg_cls_weight into the
        # per-class weights only when its class is exactly DETRHead: do it
        # here as it does (official DETR's eos_coef)
        loss_cls = copy.deepcopy(
            kwargs.get('loss_cls', inspect.signature(
                DETRHead.__init__).parameters['loss_cls'].default))
        class_weight = loss_cls.get('class_weight', None)
        bg_cls_weight = 0
        if class_weight is not None:
            bg_cls_weight = float(
                loss_cls.pop('bg_cls_weight', class_weight))
            class_weight = torch.ones(num_classes + 1) * float(class_weight)
            class_weight[num_classes] = bg_cls_weight
            loss_cls['class_weight'] = class_weight
        kwargs['loss_cls'] = loss_cls
        super().__init__(num_classes, *args, **kwargs)
        self.bg_cls_weight = bg_cls_weight
        self.clip_boxes = clip_boxes_option(self.test_cfg, True)

    def _predict_by_feat_single(self,
                                cls_score: Tensor,
                                bbox_pred: Tensor,
                                img_meta: dict,
                                rescale: bool = True) -> InstanceData:
        if self.clip_boxes or self.loss_cls.use_sigmoid:
            return super()._predict_by_feat_single(cls_score, bbox_pred,
                                                   img_meta, rescale)
        max_per_img = self.test_cfg.get('max_per_img', len(cls_score))
        scores, labels = F.softmax(cls_score, dim=-1)[..., :-1].max(-1)
        scores, index = scores.topk(max_per_img)
        return unclipped_results(bbox_pred[index], scores, labels[index],
                                 img_meta, rescale)
