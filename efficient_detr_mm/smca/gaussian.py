"""The spatial prior of SMCA: per-query Gaussian-like weight maps.

Every decoder layer predicts, from ``f = LN(query + query_pos)``, per-head
offsets of the query's centre and per-head scale multipliers, and turns them
into ``log G`` over the (padded) feature map(s):

    c_h   = sigmoid(ref_logit) * img_wh / stride + offset_h      (feature px)
    D_h   = w_x^2 (x - c_hx)^2 + w_y^2 (y - c_hy)^2               (per key)
    log G = -D_h * level_multiplier / beta

``log G`` is returned batch-first and head-split, ``(bs, heads, nq, nk)``,
i.e. the layout of :func:`efficient_detr_mm.common.attend`'s ``attn_bias``.
"""
from typing import List, Optional, Sequence, Tuple

import torch
from mmengine.model import BaseModule
from torch import Tensor, nn

# modulation -> (offsets per head?, number of scale outputs per head group,
#                one map shared by all heads?)
MODULATIONS = {
    # official ``--dynamic_scale type3`` (every README command): per-head
    # offsets, separate x / y scales per head
    'per_head_xy': (True, 2, False),
    # official ``type2``: per-head offsets, one isotropic scale per head
    'per_head_iso': (True, 1, False),
    # official ``type1`` (argparse default): per-head offsets, unit scale
    'fixed': (True, 0, False),
    # the paper's "basic SMCA": one map (centre + x / y scale) for all heads
    'shared': (False, 2, True),
}


def feature_grid(h: int, w: int, device: torch.device) -> Tensor:
    """Integer feature-pixel coordinates ``(h * w, 2)`` as (x, y), row-major
    (the flattening order of the memory), without a +0.5 offset (as the
    official code)."""
    ys, xs = torch.meshgrid(
        torch.arange(h, device=device, dtype=torch.float32),
        torch.arange(w, device=device, dtype=torch.float32),
        indexing='ij')
    return torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=-1)


class SMCAGaussian(BaseModule):
    """Predicts SMCA's log-Gaussian attention prior of one decoder layer.

    Args:
        embed_dims (int): Feature width.
        num_heads (int): Attention heads of the co-attention.
        num_levels (int): Feature levels (key segments). 1 for single-scale
            SMCA; >1 adds one Gaussian per (query, head, level) and the scale
            selection weights ``alpha = softmax(FC(f))``.
        modulation (str): ``'per_head_xy'`` (default, official type3),
            ``'per_head_iso'`` (type2), ``'fixed'`` (type1, unit scale) or
            ``'shared'`` (the paper's basic SMCA, one map for all heads).
        beta (float): Bandwidth ("smooth"), 8 in the official code.
        level_multipliers (Sequence[float], optional): Factor on ``D`` per
            level. ``None`` gives ``stride / 32`` (the multi-scale code's
            0.5 / 1 / 2 for strides 16 / 32 / 64; 1 for single-scale C5).
    """
    keeps_own_init = True

    def __init__(self,
                 embed_dims: int,
                 num_heads: int,
                 num_levels: int = 1,
                 modulation: str = 'per_head_xy',
                 beta: float = 8.0,
                 level_multipliers: Optional[Sequence[float]] = None,
                 init_cfg=None) -> None:
        super().__init__(init_cfg=init_cfg)
        if modulation not in MODULATIONS:
            raise ValueError(f'gaussian_cfg.modulation must be one of '
                             f'{sorted(MODULATIONS)}, got {modulation!r}')
        if not beta > 0:
            raise ValueError(f'gaussian_cfg.beta must be > 0, got {beta}')
        if num_levels < 1:
            raise ValueError(
                f'gaussian_cfg.num_levels must be >= 1, got {num_levels}')
        if level_multipliers is not None and \
                len(level_multipliers) != num_levels:
            raise ValueError(
                'gaussian_cfg.level_multipliers needs one value per level '
                f'({num_levels}), got {list(level_multipliers)}')
        self.embed_dims = embed_dims
        self.num_heads = num_heads
        self.num_levels = num_levels
        self.modulation = modulation
        self.beta = float(beta)
        self.level_multipliers = (None if level_multipliers is None else
                                  [float(m) for m in level_multipliers])
        has_offsets, self.num_scales, shared = MODULATIONS[modulation]
        self.map_heads = 1 if shared else num_heads
        self.offset_fc = (
            nn.Linear(embed_dims, 2 * num_heads * num_levels)
            if has_offsets else None)
        self.scale_fc = (
            nn.Linear(embed_dims,
                      self.num_scales * self.map_heads * num_levels)
            if self.num_scales else None)
        self.level_fc = (
            nn.Linear(embed_dims, num_levels) if num_levels > 1 else None)

    def init_weights(self) -> None:
        """Scale projection: weight 0, bias 1, so every multiplier is 1."""
        if self.scale_fc is not None:
            nn.init.zeros_(self.scale_fc.weight)
            nn.init.ones_(self.scale_fc.bias)

    def multipliers(self, strides: Sequence[int]) -> List[float]:
        if self.level_multipliers is not None:
            return self.level_multipliers
        return [s / 32.0 for s in strides]

    def forward(self, f: Tensor, ref_centre: Tensor, img_wh: Tensor,
                spatial_shapes: Sequence[Tuple[int, int]],
                strides: Sequence[int]) -> Tuple[Tensor, Optional[Tensor]]:
        """
        Args:
            f (Tensor): (bs, nq, C), ``LN(query + query_pos)``.
            ref_centre (Tensor): (bs, nq, 2) normalised (x, y) centres,
                ``sigmoid(ref_logit)``.
            img_wh (Tensor): (bs, 2) unpadded image (w, h) in pixels.
            spatial_shapes (Sequence[tuple]): (h, w) of each level, in the
                order of the memory.
            strides (Sequence[int]): Stride of each level.

        Returns:
            tuple: ``log_g`` (bs, heads or 1, nq, sum h*w) in fp32 and
            ``alpha`` (bs, nq, num_levels) scale weights (None for one level).
        """
        bs, nq, _ = f.shape
        L, M = self.num_levels, self.map_heads
        if len(spatial_shapes) != L or len(strides) != L:
            raise ValueError(f'{type(self).__name__} was built for {L} '
                             f'level(s), got spatial_shapes={spatial_shapes}'
                             f' and strides={strides}')
        f = f.float()
        offsets = (
            self.offset_fc(f).view(bs, nq, L, M, 2)
            if self.offset_fc is not None else None)
        if self.scale_fc is not None:
            w2 = self.scale_fc(f).view(bs, nq, L, M, self.num_scales)**2
        mults = self.multipliers(strides)
        logs = []
        for lvl, ((h, w), stride) in enumerate(zip(spatial_shapes, strides)):
            grid = feature_grid(h, w, f.device)  # (hw, 2)
            centre = (ref_centre.float() * img_wh.float()[:, None] /
                      stride)[:, :, None]  # (bs, nq, 1, 2)
            if offsets is not None:
                centre = centre + offsets[:, :, lvl]  # (bs, nq, M, 2)
            d2 = (grid - centre[..., None, :])**2  # (bs, nq, M, hw, 2)
            if self.num_scales == 2:
                dist = (d2 * w2[:, :, lvl, :, None, :]).sum(-1)
            elif self.num_scales == 1:
                dist = d2.sum(-1) * w2[:, :, lvl]
            else:
                dist = d2.sum(-1)
            logs.append(dist * (-mults[lvl] / self.beta))
        log_g = torch.cat(logs, dim=-1).transpose(1, 2)  # (bs, M, nq, nk)
        alpha = (
            self.level_fc(f).softmax(-1) if self.level_fc is not None else
            None)
        return log_g, alpha

    def flop_count(self, args: tuple, kwargs: dict, output) -> int:
        """Multiply-adds of one call: the linear projections plus, per
        (image, query, map head, key), the two squares, the scale products
        and the factor ``-multiplier / beta``."""
        names = ['f', 'ref_centre', 'img_wh', 'spatial_shapes', 'strides']
        bound = dict(zip(names, args))
        bound.update(kwargs)
        bs, nq, c = bound['f'].shape
        nk = sum(h * w for h, w in bound['spatial_shapes'])
        out_feats = sum(
            m.out_features
            for m in (self.offset_fc, self.scale_fc, self.level_fc)
            if m is not None)
        per_key = 2 + self.num_scales + 1
        return bs * nq * (c * out_feats + self.map_heads * nk * per_key)
