"""Checks shared by every detector of the package: configuration errors at
build time, non-finite numbers with a message that names them, and inputs
with fewer tokens than queries.

* Build time (:func:`check_num_queries`, :func:`check_feature_levels`,
  :func:`check_feature_strides`): a value that would only fail at forward
  time (with a shape error) or silently mis-scale fails when the model is
  built, naming the key and the value it must have.
* Non-finite numbers (:func:`check_finite_inputs`,
  :func:`check_finite_losses`, :class:`FiniteCheckAssigner`): NaN / inf
  input images, ground-truth boxes, predictions or losses raise a
  :class:`NonFiniteError` naming what is not finite (and the image file),
  instead of scipy's "matrix contains invalid numeric entries" in the
  Hungarian matching.
* Fewer tokens than queries (:func:`pad_proposals`): the two-stage query
  selection of DINO / Deformable-DETR takes the top ``num_queries``
  encoder tokens; an image whose feature maps hold fewer tokens (a very
  small or very elongated image) gets the missing candidates as padded
  tokens, exactly as a padded position of a batched image is one.
"""
from typing import Dict, List, Optional, Sequence

import torch
from torch import Tensor, nn


class NonFiniteError(FloatingPointError):
    """A NaN or inf where a finite number is needed."""


# ---------------------------------------------------------------- build time
def check_bool(name: str, value) -> bool:
    """``value`` of the config key ``name``, which must be True or False."""
    if not isinstance(value, bool):
        raise ValueError(f'{name} must be True or False, got {value!r}')
    return value


def check_num_queries(detector: nn.Module) -> None:
    """``num_queries`` must be a positive integer."""
    n = getattr(detector, 'num_queries', None)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f'{type(detector).__name__}: num_queries must be a '
                         f'positive integer, got {n!r}')


def neck_num_outs(neck: Optional[nn.Module]) -> Optional[int]:
    """Number of feature maps a (ChannelMapper-like) neck returns, or
    ``None`` when it cannot be told from the module."""
    convs = getattr(neck, 'convs', None)
    if convs is None:
        return None
    extra = getattr(neck, 'extra_convs', None)
    return len(convs) + (len(extra) if extra else 0)


def feature_strides(backbone: nn.Module,
                    neck: Optional[nn.Module]) -> Optional[List[int]]:
    """Strides of the neck's outputs, from a ResNet-like backbone (4x stem,
    ``strides`` per stage, ``out_indices``) and a ChannelMapper-like neck
    (one output per input, then extra stride-2 convolutions).  ``None`` when
    the modules do not tell (another backbone type)."""
    strides = getattr(backbone, 'strides', None)
    out_indices = getattr(backbone, 'out_indices', None)
    if strides is None or out_indices is None:
        return None
    stage_strides, s = [], 4
    for st in strides:
        s *= int(st)
        stage_strides.append(s)
    outs = [stage_strides[i] for i in out_indices]
    n = neck_num_outs(neck) if neck is not None else len(outs)
    if n is None:
        return None
    if n < len(outs):
        outs = outs[:n]
    while len(outs) < n:
        outs.append(outs[-1] * 2)
    return outs


def check_feature_levels(detector: nn.Module) -> None:
    """Multi-scale (Deformable-DETR / DINO family) detectors:
    ``num_feature_levels`` must equal the number of neck outputs and the
    ``num_levels`` of every encoder / decoder attention."""
    name = type(detector).__name__
    levels = detector.num_feature_levels
    n = neck_num_outs(getattr(detector, 'neck', None))
    if n is not None and n != levels:
        raise ValueError(
            f'{name}: num_feature_levels={levels} but the neck gives {n} '
            f'feature maps; set neck.num_outs={levels} (or '
            f'num_feature_levels={n})')
    for part, attn in (('encoder', 'self_attn_cfg'),
                       ('decoder', 'cross_attn_cfg')):
        for mod_name, m in getattr(detector, part).named_modules():
            lv = getattr(m, 'num_levels', None)
            if isinstance(lv, int) and lv != levels:
                where = f'{part}.{mod_name}' if mod_name else part
                raise ValueError(
                    f'{name}: {where} ({type(m).__name__}) has '
                    f'num_levels={lv} but the detector has '
                    f'num_feature_levels={levels}: set '
                    f'{part}.layer_cfg.{attn}.num_levels={levels}')


def check_feature_strides(detector: nn.Module,
                          feat_strides: Sequence[int]) -> None:
    """``feat_strides`` must be the strides of the neck outputs the
    detector uses (its last ``len(feat_strides)`` ones)."""
    strides = feature_strides(detector.backbone,
                              getattr(detector, 'neck', None))
    if strides is None:
        return
    want = tuple(feat_strides)
    if len(strides) < len(want):
        raise ValueError(
            f'{type(detector).__name__}: feat_strides={want} names '
            f'{len(want)} levels but the backbone and neck give '
            f'{len(strides)} feature maps (strides {tuple(strides)})')
    got = tuple(strides[-len(want):])
    if got != want:
        raise ValueError(
            f'{type(detector).__name__}: feat_strides={want} does not match '
            f'the strides of the backbone and neck outputs it uses; set '
            f'feat_strides={got}')


# ------------------------------------------------------------- finiteness
def _img_name(sample) -> str:
    meta = getattr(sample, 'metainfo', {}) or {}
    return str(meta.get('img_path', meta.get('img_id', '<unknown image>')))


def check_finite_inputs(batch_inputs: Tensor, batch_data_samples) -> None:
    """Raise :class:`NonFiniteError` naming the images whose pixels or
    ground-truth boxes are NaN / inf."""
    bad = []
    ok = torch.isfinite(batch_inputs.flatten(1)).all(dim=1)
    gt_ok = []
    for s in batch_data_samples or []:
        gt = getattr(s, 'gt_instances', None)
        boxes = getattr(gt, 'bboxes', None) if gt is not None else None
        if boxes is not None:
            boxes = getattr(boxes, 'tensor', boxes)
            gt_ok.append(torch.isfinite(boxes).all())
        else:
            gt_ok.append(ok.new_ones(()))
    if bool(ok.all()) and all(bool(g) for g in gt_ok):
        return
    for i, s in enumerate(batch_data_samples or []):
        if not bool(ok[i]):
            bad.append(f'{_img_name(s)}: pixels')
        if i < len(gt_ok) and not bool(gt_ok[i]):
            bad.append(f'{_img_name(s)}: ground-truth boxes')
    if not bad:
        bad = ['pixels of the batch']
    raise NonFiniteError('non-finite (NaN or inf) input: ' +
                         '; '.join(bad))


def check_finite_losses(losses: Dict[str, Tensor]) -> None:
    """Raise :class:`NonFiniteError` naming the loss terms that are NaN or
    inf (one host sync for the whole dict)."""
    terms = {
        k: v
        for k, v in losses.items() if isinstance(v, Tensor)
    } if isinstance(losses, dict) else {}
    if not terms:
        return
    flags = torch.stack(
        [torch.isfinite(v.detach().float()).all() for v in terms.values()])
    if bool(flags.all()):
        return
    bad = [k for k, f in zip(terms, flags.tolist()) if not f]
    raise NonFiniteError(
        f'non-finite (NaN or inf) loss: {", ".join(bad)}; the training '
        'diverged (lower the learning rate, check gradient clipping and '
        'the input data) or the loaded weights are not finite')


class FiniteCheckAssigner:
    """Wraps a (Hungarian) assigner: before matching, predictions and
    ground truth must be finite, else :class:`NonFiniteError` names what is
    not (instead of scipy's "matrix contains invalid numeric entries").
    Every other attribute is the wrapped assigner's."""

    def __init__(self, assigner) -> None:
        self.assigner = assigner

    def __getattr__(self, name: str):
        # only called for names not found on the wrapper; during copy /
        # unpickling 'assigner' is not set yet
        if 'assigner' not in self.__dict__:
            raise AttributeError(name)
        return getattr(self.__dict__['assigner'], name)

    def assign(self, pred_instances, gt_instances, img_meta=None, **kwargs):
        tensors = {
            'predicted scores': getattr(pred_instances, 'scores', None),
            'predicted boxes': getattr(pred_instances, 'bboxes', None),
            'ground-truth boxes': getattr(gt_instances, 'bboxes', None),
        }
        tensors = {
            k: getattr(v, 'tensor', v)
            for k, v in tensors.items() if v is not None
        }
        flags = torch.stack(
            [torch.isfinite(v.detach()).all() for v in tensors.values()])
        if not bool(flags.all()):
            bad = [k for k, f in zip(tensors, flags.tolist()) if not f]
            img = (img_meta or {}).get('img_path', '<unknown image>')
            raise NonFiniteError(
                f'non-finite (NaN or inf) {", ".join(bad)} for {img} in the '
                'Hungarian matching: the weights or activations are not '
                'finite (diverged training, a corrupt checkpoint) or the '
                'input is not')
        return self.assigner.assign(
            pred_instances=pred_instances,
            gt_instances=gt_instances,
            img_meta=img_meta,
            **kwargs)


def guard_assigner(head: nn.Module) -> None:
    """Wrap ``head.assigner`` (when it has one) in
    :class:`FiniteCheckAssigner`."""
    assigner = getattr(head, 'assigner', None)
    if assigner is not None and not isinstance(assigner,
                                               FiniteCheckAssigner):
        head.assigner = FiniteCheckAssigner(assigner)


# ------------------------------------------------- fewer tokens than queries
def pad_proposals(output_memory: Tensor, output_proposals: Tensor,
                  min_tokens: int) -> tuple:
    """Pad the encoder proposals of ``gen_encoder_output_proposals`` to at
    least ``min_tokens`` tokens with padded-token values (memory 0,
    proposal +inf, what mmdet gives a padded position), so that the top
    ``num_queries`` selection works on an image with fewer tokens."""
    bs, n, c = output_memory.shape
    if n >= min_tokens:
        return output_memory, output_proposals
    pad = min_tokens - n
    output_memory = torch.cat(
        [output_memory, output_memory.new_zeros(bs, pad, c)], dim=1)
    output_proposals = torch.cat([
        output_proposals,
        output_proposals.new_full((bs, pad, output_proposals.shape[-1]),
                                  float('inf'))
    ], dim=1)
    return output_memory, output_proposals
