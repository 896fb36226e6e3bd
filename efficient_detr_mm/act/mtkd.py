"""MTKD (Multi-Task Knowledge Distillation) of ACT: the distillation loss
and the training hook.

The release has no MTKD code; this is the configurable formulation of
``smca_act.md`` C2: one set of weights, the backbone run once, the
transformer run with ACT off (teacher) and on (student);
``L = w_S L_set(student) + w_T L_set(teacher) + w_KD L_KD(boxes)`` with the
boxes matched by query index.  Option: a separate frozen teacher loaded from
a checkpoint.
"""
import copy
from typing import Dict, Optional

import torch.nn.functional as F
from mmdet.registry import HOOKS, MODELS
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from torch import Tensor, nn

from ..runtime import load_checkpoint

KD_LOSSES = ('mse', 'l1')


@MODELS.register_module()
class MTKDLoss(nn.Module):
    """Distillation between the ACT (student) and full-attention (teacher)
    predictions of the same queries.

    Args:
        loss_type (str): ``'mse'`` (default) or ``'l1'`` on the normalised
            (cx, cy, w, h) boxes.
        loss_weight (float): weight of the box term. Defaults to 1.0.
        all_layers (bool): distil every decoder layer's boxes (mean over
            layers) instead of the last one only. Defaults to False.
        cls_weight (float): weight of an optional KL(teacher || student)
            term on the softmax class scores; 0 (default) = boxes only.
    """

    def __init__(self,
                 loss_type: str = 'mse',
                 loss_weight: float = 1.0,
                 all_layers: bool = False,
                 cls_weight: float = 0.0) -> None:
        super().__init__()
        if loss_type not in KD_LOSSES:
            raise ValueError(f'MTKDLoss: loss_type must be one of '
                             f'{KD_LOSSES}, got {loss_type!r}')
        self.loss_type = loss_type
        self.loss_weight = loss_weight
        self.all_layers = all_layers
        self.cls_weight = cls_weight

    def forward(self,
                boxes_s: Tensor,
                boxes_t: Tensor,
                cls_s: Optional[Tensor] = None,
                cls_t: Optional[Tensor] = None) -> Dict[str, Tensor]:
        """
        Args:
            boxes_s, boxes_t (Tensor): (layers, bs, queries, 4) student and
                teacher boxes (detach the teacher before, if wanted).
            cls_s, cls_t (Tensor, optional): (layers, bs, queries, classes)
                logits, used when ``cls_weight > 0``.

        Returns:
            dict: ``loss_kd`` (and ``loss_kd_cls``), fp32.
        """
        if not self.all_layers:
            boxes_s, boxes_t = boxes_s[-1:], boxes_t[-1:]
        fn = F.mse_loss if self.loss_type == 'mse' else F.l1_loss
        out = dict(
            loss_kd=fn(boxes_s.float(), boxes_t.float()) * self.loss_weight)
        if self.cls_weight > 0:
            if not self.all_layers:
                cls_s, cls_t = cls_s[-1:], cls_t[-1:]
            kl = F.kl_div(
                cls_s.float().log_softmax(-1),
                cls_t.float().log_softmax(-1),
                log_target=True,
                reduction='none').sum(-1).mean()
            out['loss_kd_cls'] = kl * self.cls_weight
        return out


@HOOKS.register_module()
class MTKDHook(Hook):
    """Fine-tune an :class:`ACTDETR` with MTKD.

    Before training it switches the detector into MTKD mode (see
    :meth:`ACTDETR.set_mtkd`); after each iteration it logs the number of
    prototypes per encoder layer as a fraction of the tokens
    (``act_protos_l{i}``).

    Args:
        student_weight (float): weight of the ACT branch's set loss.
        teacher_weight (float): weight of the full-attention branch's set
            loss (shared-weights mode).
        train_teacher_branch (bool): train the full-attention branch too
            (shared weights); False runs it without gradient.
        teacher_detach (bool): stop the gradient of the distillation loss
            into the teacher's boxes. Defaults to True.
        teacher_dropout (bool): keep dropout in the shared-weights teacher
            branch (default True); False runs it without dropout, so that
            the distillation target is not dropout noise.
        distill_loss (dict): config of the distillation loss
            (``MTKDLoss``: ``loss_type``, ``loss_weight``, ``all_layers``).
        teacher_checkpoint (str, optional): load a separate frozen teacher
            from this checkpoint instead of sharing the weights.
        teacher_model (dict, optional): model config of that teacher;
            defaults to the trained model's config.
        log_prototypes (bool): log prototypes per layer. Defaults to True.
    """

    priority = 'NORMAL'

    def __init__(self,
                 student_weight: float = 1.0,
                 teacher_weight: float = 1.0,
                 train_teacher_branch: bool = True,
                 teacher_detach: bool = True,
                 teacher_dropout: bool = True,
                 distill_loss: dict = dict(type='MTKDLoss'),
                 teacher_checkpoint: Optional[str] = None,
                 teacher_model: Optional[dict] = None,
                 log_prototypes: bool = True) -> None:
        self.options = dict(
            student_weight=student_weight,
            teacher_weight=teacher_weight,
            train_teacher_branch=train_teacher_branch,
            teacher_detach=teacher_detach,
            teacher_dropout=teacher_dropout,
            distill_loss=copy.deepcopy(dict(distill_loss)))
        # fail at build time on a bad loss config
        MODELS.build(self.options['distill_loss'])
        if teacher_model is not None and teacher_checkpoint is None:
            raise ValueError('MTKDHook: teacher_model needs '
                             'teacher_checkpoint')
        self.teacher_checkpoint = teacher_checkpoint
        self.teacher_model = teacher_model
        self.log_prototypes = log_prototypes

    @staticmethod
    def _detector(runner) -> nn.Module:
        model = runner.model
        if is_model_wrapper(model):
            model = model.module
        if not hasattr(model, 'set_mtkd'):
            raise TypeError('MTKDHook needs an ACTDETR model (model.type), '
                            f'got {type(model).__name__}')
        return model

    def _build_teacher(self, runner, student: nn.Module) -> nn.Module:
        cfg = copy.deepcopy(self.teacher_model or runner.cfg.model)
        teacher = MODELS.build(cfg)
        load_checkpoint(
            teacher, self.teacher_checkpoint, map_location='cpu',
            strict=True)
        device = next(student.parameters()).device
        return teacher.to(device)

    def before_train(self, runner) -> None:
        model = self._detector(runner)
        teacher = None
        if self.teacher_checkpoint is not None:
            teacher = self._build_teacher(runner, model)
        model.set_mtkd(teacher=teacher, **self.options)
        runner.logger.info(
            'MTKD on: ' + ('frozen teacher from ' + self.teacher_checkpoint
                           if teacher is not None else
                           'shared weights, teacher = ACT off'))

    def after_train(self, runner) -> None:
        self._detector(runner).clear_mtkd()

    def after_train_iter(self,
                         runner,
                         batch_idx: int,
                         data_batch=None,
                         outputs=None) -> None:
        if not self.log_prototypes:
            return
        model = self._detector(runner)
        for i, m in enumerate(model.act_layers()):
            if m.last_num_prototypes is None or m.last_num_tokens == 0:
                continue
            frac = m.last_num_prototypes.float().mean() / m.last_num_tokens
            runner.message_hub.update_scalar(f'train/act_protos_l{i}',
                                             float(frac))
