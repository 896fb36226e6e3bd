"""Supervision of the Foreground Token Selector: per-level scale-range label
assignment from the ground-truth boxes and a sigmoid focal loss."""
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from mmdet.registry import MODELS
from mmdet.structures import SampleList
from mmengine.model import BaseModule
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence

#: official code: disjoint half-open ranges (lo, hi] of the FCOS scale d
CODE_RANGES = ((-1.0, 64.0), (64.0, 128.0), (128.0, 256.0), (256.0, 999999.0))
#: the paper says adjacent ranges overlap ("by 50%" per a blog); the numbers
#: are not released -- this extends each lower bound down by half of it.
#: An extrapolation, not the authors' values.
PAPER_OVERLAP_RANGES = ((-1.0, 64.0), (32.0, 128.0), (64.0, 256.0),
                        (128.0, 999999.0))
RANGE_PRESETS = dict(code=CODE_RANGES, paper_overlap=PAPER_OVERLAP_RANGES)
SCALE_MEASURES = ('ltrb_max', 'center_chebyshev')


def token_centers(spatial_shapes: Tensor, strides: Sequence[int],
                  device: torch.device) -> Tuple[Tensor, Tensor]:
    """Pixel position of every token, ``x = j*s + floor(s/2)`` (official).

    Returns:
        tuple: (N, 2) xy centres and (N,) long level index.
    """
    pts, lvls = [], []
    for lvl, ((h, w), s) in enumerate(zip(spatial_shapes.tolist(), strides)):
        ys = torch.arange(h, device=device, dtype=torch.float32) * s + s // 2
        xs = torch.arange(w, device=device, dtype=torch.float32) * s + s // 2
        yy, xx = torch.meshgrid(ys, xs, indexing='ij')
        pts.append(torch.stack([xx.reshape(-1), yy.reshape(-1)], -1))
        lvls.append(torch.full((h * w, ), lvl, dtype=torch.long,
                               device=device))
    return torch.cat(pts), torch.cat(lvls)


def fts_targets(spatial_shapes: Tensor,
                gt_bboxes: List[Tensor],
                strides: Sequence[int] = (8, 16, 32, 64),
                ranges: Sequence[Tuple[float, float]] = CODE_RANGES,
                scale_measure: str = 'ltrb_max') -> Tensor:
    """Binary foreground labels of all tokens of a batch.

    A token of level l is positive for a box when it lies strictly inside
    the box and ``lo_l < d <= hi_l``; ``d`` is ``max(l, t, r, b)`` (FCOS,
    official code, ``'ltrb_max'``) or the chessboard distance to the box
    centre (paper text, ``'center_chebyshev'``). Classes are ignored.

    Args:
        spatial_shapes (Tensor): (num_levels, 2) (h, w) per level.
        gt_bboxes (list[Tensor]): per image (g_b, 4) xyxy boxes in pixels of
            the network input.
        strides (Sequence[int]): stride of each level.
        ranges (Sequence[tuple]): (lo, hi] of each level.
        scale_measure (str): 'ltrb_max' or 'center_chebyshev'.

    Returns:
        Tensor: (bs, N) float labels in {0, 1}.
    """
    device = spatial_shapes.device
    if len(strides) != len(spatial_shapes) or len(ranges) != len(strides):
        raise ValueError(
            f'FTS targets: {len(spatial_shapes)} feature levels but '
            f'{len(strides)} strides and {len(ranges)} ranges')
    pts, lvl = token_centers(spatial_shapes, strides, device)
    bs, n = len(gt_bboxes), pts.shape[0]
    g = max([int(b.shape[0]) for b in gt_bboxes] + [0])
    if g == 0:
        return pts.new_zeros(bs, n)
    boxes = pad_sequence(
        [b.to(device=device, dtype=torch.float32).reshape(-1, 4)
         for b in gt_bboxes],
        batch_first=True)  # (bs, g, 4)
    lens = torch.tensor([int(b.shape[0]) for b in gt_bboxes], device=device)
    real = torch.arange(g, device=device)[None] < lens[:, None]
    x = pts[None, :, None, 0]  # (1, N, 1)
    y = pts[None, :, None, 1]
    x0, y0, x1, y1 = (boxes[:, None, :, k] for k in range(4))  # (bs, 1, g)
    ltrb = torch.stack([x - x0, y - y0, x1 - x, y1 - y], -1)
    inside = ltrb.min(-1).values > 0
    if scale_measure == 'ltrb_max':
        d = ltrb.max(-1).values
    elif scale_measure == 'center_chebyshev':
        d = torch.maximum((x - (x0 + x1) / 2).abs(), (y - (y0 + y1) / 2).abs())
    else:
        raise ValueError(f'FTS targets: scale_measure must be one of '
                         f'{SCALE_MEASURES}, got {scale_measure!r}')
    rng = pts.new_tensor(ranges)[lvl]  # (N, 2)
    in_range = (d > rng[None, :, None, 0]) & (d <= rng[None, :, None, 1])
    pos = inside & in_range & real[:, None, :]
    return pos.any(-1).float()


def sigmoid_focal_loss(logits: Tensor,
                       targets: Tensor,
                       alpha: float = 0.25,
                       gamma: float = 2.0) -> Tensor:
    """Element-wise sigmoid focal loss in fp32, BCE-with-logits form (finite
    for any finite logit, also under autocast)."""
    logits = logits.float()
    targets = targets.float()
    p = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction='none')
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce * (1 - p_t).pow(gamma)
    if alpha >= 0:
        loss = loss * (alpha * targets + (1 - alpha) * (1 - targets))
    return loss


def _resolve_ranges(ranges: Union[str, Sequence]) -> Tuple:
    if isinstance(ranges, str):
        if ranges not in RANGE_PRESETS:
            raise ValueError(f'FTSLoss: ranges must be one of '
                             f'{tuple(RANGE_PRESETS)} or a list of (lo, hi), '
                             f'got {ranges!r}')
        return RANGE_PRESETS[ranges]
    out = tuple((float(lo), float(hi)) for lo, hi in ranges)
    if any(hi <= lo for lo, hi in out):
        raise ValueError(f'FTSLoss: every range needs lo < hi, got {out}')
    return out


@MODELS.register_module()
class FTSLoss(BaseModule):
    """Focal loss of the foreground scores against the scale-range labels.

    Per image: sum over its real tokens, divided by ``max(1, #positives)``;
    then the mean over the images; times ``loss_weight``. Padded tokens are
    left out (the official code counts them as negatives).

    Args:
        strides (Sequence[int]): stride of each feature level.
            Defaults to (8, 16, 32, 64).
        ranges (str | Sequence): 'code' (default, disjoint official ranges),
            'paper_overlap' or an explicit list of (lo, hi] per level.
        scale_measure (str): 'ltrb_max' (code, default) or
            'center_chebyshev' (paper).
        alpha (float): focal alpha. Defaults to 0.25.
        gamma (float): focal gamma. Defaults to 2.0.
        loss_weight (float): Defaults to 1.5.
    """

    def __init__(self,
                 strides: Sequence[int] = (8, 16, 32, 64),
                 ranges: Union[str, Sequence] = 'code',
                 scale_measure: str = 'ltrb_max',
                 alpha: float = 0.25,
                 gamma: float = 2.0,
                 loss_weight: float = 1.5,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if scale_measure not in SCALE_MEASURES:
            raise ValueError(f'FTSLoss: scale_measure must be one of '
                             f'{SCALE_MEASURES}, got {scale_measure!r}')
        self.strides = tuple(int(s) for s in strides)
        self.ranges = _resolve_ranges(ranges)
        if len(self.ranges) != len(self.strides):
            raise ValueError(
                f'FTSLoss: {len(self.strides)} strides but '
                f'{len(self.ranges)} ranges; give one range per level')
        self.scale_measure = scale_measure
        self.alpha = alpha
        self.gamma = gamma
        self.loss_weight = loss_weight

    def get_targets(self, spatial_shapes: Tensor,
                    batch_data_samples: SampleList) -> Tensor:
        """(bs, N) binary labels from the samples' ``gt_instances``."""
        return fts_targets(
            spatial_shapes,
            [s.gt_instances.bboxes for s in batch_data_samples],
            strides=self.strides,
            ranges=self.ranges,
            scale_measure=self.scale_measure)

    def forward(self,
                logits: Tensor,
                targets: Tensor,
                valid: Optional[Tensor] = None) -> Tensor:
        """Args:
            logits (Tensor): (bs, N) foreground logits (any dtype).
            targets (Tensor): (bs, N) labels in {0, 1}.
            valid (Tensor, optional): (bs, N) bool, True = real token.

        Returns:
            Tensor: fp32 scalar loss.
        """
        with torch.autocast(device_type=logits.device.type, enabled=False):
            loss = sigmoid_focal_loss(logits, targets, self.alpha, self.gamma)
            targets = targets.float()
            if valid is not None:
                loss = loss * valid.float()
                targets = targets * valid.float()
            num_pos = targets.sum(1).clamp(min=1.0)
            per_image = loss.sum(1) / num_pos
            return per_image.mean() * self.loss_weight
