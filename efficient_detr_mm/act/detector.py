"""ACTDETR: DETR whose encoder self-attention is :class:`ACTAttention`,
with the Multi-Task Knowledge Distillation (MTKD) training mode."""
import copy
from contextlib import contextmanager, nullcontext
from typing import Dict, Iterator, List, Optional

import torch
from mmdet.models.utils import unpack_gt_instances
from mmdet.registry import MODELS
from mmdet.structures import SampleList
from mmdet.utils import OptConfigType
from torch import Tensor, nn

from ..common.detectors import EffDETR
from .act_attention import (ACTAttention, act_enabled, act_modules,
                            prototype_stats)

#: MTKD options of :meth:`ACTDETR.set_mtkd` and their defaults
MTKD_DEFAULTS = dict(
    student_weight=1.0,
    teacher_weight=1.0,
    train_teacher_branch=True,
    teacher_detach=True,
    teacher_dropout=True,
    distill_loss=dict(type='MTKDLoss'))


@MODELS.register_module()
class ACTDETR(EffDETR):
    """DETR with adaptive clustering attention in every encoder layer.

    ACT adds no parameter, so any (mmdet) DETR checkpoint of the same
    architecture loads strictly; evaluating it with this detector is ACT
    "without retraining".

    Args:
        act_cfg (dict, optional): :class:`ACTAttention` options (e.g.
            ``num_hashes``, ``seed``) merged into the encoder layers'
            ``self_attn_cfg``, whose ``type`` becomes ``'ACTAttention'``
            when missing.  With ``seed`` set, encoder layer ``i`` uses
            ``seed + i`` (different, fixed hashes per layer).
        *args, **kwargs: those of :class:`EffDETR` / mmdet's ``DETR``.
    """

    def __init__(self, *args, act_cfg: OptConfigType = None,
                 **kwargs) -> None:
        self.act_cfg = dict(act_cfg or {})
        #: MTKD state, set by :meth:`set_mtkd` (MTKDHook); a plain dict so
        #: that nothing of it is a sub-module (state dict, DDP unchanged)
        self._mtkd: Optional[dict] = None
        super().__init__(*args, **kwargs)

    def _init_layers(self) -> None:
        enc = copy.deepcopy(dict(self.encoder))
        layer = dict(enc.get('layer_cfg') or {})
        attn = dict(layer.get('self_attn_cfg') or {})
        attn.setdefault('type', 'ACTAttention')
        attn_type = attn['type']
        if isinstance(attn_type, str):
            attn_type = MODELS.get(attn_type)
        if not (isinstance(attn_type, type)
                and issubclass(attn_type, ACTAttention)):
            raise ValueError(
                'ACTDETR: encoder.layer_cfg.self_attn_cfg.type must be '
                f"'ACTAttention' (or a subclass), got {attn['type']!r}")
        seed = self.act_cfg.get('seed')
        attn.update(self.act_cfg)
        layer['self_attn_cfg'] = attn
        enc['layer_cfg'] = layer
        self.encoder = enc
        super()._init_layers()
        layers = self.encoder.layers
        if seed is not None:
            for i, lyr in enumerate(layers):
                lyr.self_attn.seed = int(seed) + i

    # ------------------------------------------------------------------
    def act_layers(self) -> List[ACTAttention]:
        """The encoder's ACT attentions, layer by layer."""
        return act_modules(self.encoder)

    def prototype_stats(self) -> Dict[str, float]:
        """Prototypes per head as a fraction of tokens, per encoder layer,
        since the last :meth:`reset_act_stats`."""
        return prototype_stats(self.encoder)

    def reset_act_stats(self) -> None:
        for m in self.act_layers():
            m.reset_stats()

    def set_act(self, enabled: bool) -> None:
        """Switch ACT on (clustered) or off (exact DETR attention)."""
        for m in self.act_layers():
            m.enabled = enabled

    # ------------------------------------------------------------------
    def set_mtkd(self,
                 teacher: Optional[nn.Module] = None,
                 **options) -> None:
        """Turn on MTKD training (used by :class:`MTKDHook`).

        Args:
            teacher (nn.Module, optional): a separate frozen teacher detector
                (run with ACT off, without gradient).  ``None`` (default):
                one set of weights, the transformer run with ACT off
                (teacher) and on (student) on the same backbone features.
            **options: ``student_weight``, ``teacher_weight``,
                ``train_teacher_branch``, ``teacher_detach``,
                ``teacher_dropout`` (False: the shared-weights teacher
                branch runs its transformer without dropout, so the KD
                target is not dropout noise), ``distill_loss`` (config
                of the distillation loss), see :data:`MTKD_DEFAULTS`.
        """
        unknown = set(options) - set(MTKD_DEFAULTS)
        if unknown:
            raise ValueError(f'MTKD: unknown option(s) {sorted(unknown)}; '
                             f'allowed: {sorted(MTKD_DEFAULTS)}')
        cfg = copy.deepcopy(MTKD_DEFAULTS)
        cfg.update(options)
        cfg['distill_loss'] = MODELS.build(cfg['distill_loss'])
        if teacher is not None:
            teacher.eval()
            for p in teacher.parameters():
                p.requires_grad_(False)
        cfg['teacher'] = teacher
        self._mtkd = cfg

    def clear_mtkd(self) -> None:
        self._mtkd = None

    @property
    def mtkd_enabled(self) -> bool:
        return self._mtkd is not None

    def _head_outputs(self, model: nn.Module, img_feats, samples):
        head_inputs = model.forward_transformer(img_feats, samples)
        return model.bbox_head(**head_inputs)

    def loss(self, batch_inputs: Tensor,
             batch_data_samples: SampleList) -> Dict[str, Tensor]:
        """DETR's losses; with MTKD on, the student (ACT on) set loss, the
        teacher (ACT off) set loss and the distillation loss.

        Returns:
            dict: losses.  MTKD keys: ``student.*`` and ``teacher.*`` set
            losses (each weighted) and the distillation loss keys.
        """
        if self._mtkd is None:
            return super().loss(batch_inputs, batch_data_samples)
        cfg = self._mtkd
        gts, _, metas = unpack_gt_instances(batch_data_samples)
        img_feats = self.extract_feat(batch_inputs)  # backbone runs once
        losses = dict()
        teacher = cfg['teacher']
        if teacher is None:
            train_t = cfg['train_teacher_branch']
            with act_enabled(self, False), \
                    (nullcontext() if train_t else torch.no_grad()), \
                    _no_dropout(self, not cfg['teacher_dropout']):
                cls_t, box_t = self._head_outputs(self, img_feats,
                                                  batch_data_samples)
            if train_t:
                t_losses = self.bbox_head.loss_by_feat(
                    cls_t, box_t, gts, metas)
                losses.update(
                    _scaled(t_losses, cfg['teacher_weight'], 'teacher.'))
        else:
            teacher.eval()
            with torch.no_grad(), act_enabled(teacher, False):
                cls_t, box_t = self._head_outputs(
                    teacher, teacher.extract_feat(batch_inputs),
                    batch_data_samples)
        with act_enabled(self, True):
            cls_s, box_s = self._head_outputs(self, img_feats,
                                              batch_data_samples)
        s_losses = self.bbox_head.loss_by_feat(cls_s, box_s, gts, metas)
        losses.update(_scaled(s_losses, cfg['student_weight'], 'student.'))
        if cfg['teacher_detach']:
            cls_t, box_t = cls_t.detach(), box_t.detach()
        losses.update(cfg['distill_loss'](box_s, box_t, cls_s, cls_t))
        return losses


@contextmanager
def _no_dropout(model: nn.Module, active: bool) -> Iterator[None]:
    """Run the transformer (encoder, decoder) in eval mode, i.e. without
    dropout (it has no batch norm), when ``active``."""
    parts = [model.encoder, model.decoder] if active else []
    modes = [p.training for p in parts]
    for p in parts:
        p.train(False)
    try:
        yield
    finally:
        for p, mode in zip(parts, modes):
            p.train(mode)


def _scaled(losses: Dict[str, Tensor], weight: float,
            prefix: str) -> Dict[str, Tensor]:
    """Prefix every key and scale every loss (``loss`` keys) by
    ``weight``."""
    return {
        prefix + k: (v * weight if 'loss' in k else v)
        for k, v in losses.items()
    }
