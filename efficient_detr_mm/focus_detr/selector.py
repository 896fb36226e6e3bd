"""Foreground Token Selector (FTS) of Focus-DETR.

A shared multi-level foreground scorer (``FTSScorer``: the DynamicViT /
Sparse-DETR style local/global MLP), a top-down score modulation with one
learnable coefficient per pair of adjacent levels, and the cascaded token
selection of the encoder layers.
"""
import numbers
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from mmdet.registry import MODELS
from mmengine.model import BaseModule
from torch import Tensor, nn

from ..common.masks import valid_mask


class FTSScorer(nn.Module):
    """Foreground-score MLP shared by all feature levels.

    ``h = GELU(Linear(LN(z)))``; the first half of the channels is kept per
    token ("local"), the second half is replaced by its mean over the level
    ("global"); an MLP ``C -> C/2 -> C/4 -> 1`` gives one raw logit per token.

    Args:
        embed_dims (int): token width C. Defaults to 256.
    """

    def __init__(self, embed_dims: int = 256) -> None:
        super().__init__()
        if embed_dims % 4 != 0:
            raise ValueError(
                f'FTSScorer: embed_dims must be divisible by 4, got '
                f'{embed_dims}')
        self.layer1 = nn.Sequential(
            nn.LayerNorm(embed_dims), nn.Linear(embed_dims, embed_dims),
            nn.GELU())
        self.layer2 = nn.Sequential(
            nn.Linear(embed_dims, embed_dims // 2), nn.GELU(),
            nn.Linear(embed_dims // 2, embed_dims // 4), nn.GELU(),
            nn.Linear(embed_dims // 4, 1))

    def forward(self, z: Tensor, valid: Optional[Tensor] = None) -> Tensor:
        """Score the tokens of ONE level.

        Args:
            z (Tensor): (bs, n, C) tokens of one level.
            valid (Tensor, optional): (bs, n) bool, True = real token. The
                global mean runs over real tokens only; None = all real.

        Returns:
            Tensor: (bs, n) raw logits.
        """
        h = self.layer1(z)
        half = h.shape[-1] // 2
        local, glob = h[..., :half], h[..., half:]
        if valid is None:
            glob = glob.mean(dim=1, keepdim=True)
        else:
            w = valid.to(glob.dtype).unsqueeze(-1)
            glob = (glob * w).sum(1, keepdim=True) / w.sum(
                1, keepdim=True).clamp(min=1)
        h = torch.cat([local, glob.expand_as(local)], dim=-1)
        return self.layer2(h).squeeze(-1)


def _check_fraction_list(name: str, values: Sequence[float]) -> List[float]:
    if any(isinstance(v, bool) or not isinstance(v, numbers.Real)
           for v in values):
        raise ValueError(f'ForegroundTokenSelector: every entry of {name} '
                         f'must be a number in (0, 1], got {list(values)}')
    values = [float(v) for v in values]
    if not values or any(not 0.0 < v <= 1.0 for v in values):
        raise ValueError(f'ForegroundTokenSelector: every entry of {name} '
                         f'must lie in (0, 1], got {values}')
    if any(b > a for a, b in zip(values, values[1:])):
        raise ValueError(f'ForegroundTokenSelector: {name} must be '
                         f'non-increasing (nested token sets), got {values}')
    return values


@MODELS.register_module()
class ForegroundTokenSelector(BaseModule):
    """Scores every multi-scale token and picks the foreground sets of the
    encoder layers (Focus-DETR, Sec. 3.2).

    Scoring (``score``): levels from the coarsest to the finest; the logit
    map of level l+1 (after its own modulation) is resized bilinearly to
    level l and modulates its features, ``z_l * (1 + alpha * up(s_{l+1}))``,
    before the shared :class:`FTSScorer` scores level l.

    Selection (``select``): image b keeps ``n_b = floor(keep_ratio * V_b) + 1``
    tokens (V_b its real tokens); one ranking (top-k over all levels at
    once) gives every layer a prefix of the same sorted index list, so the
    sets are nested; layer l takes ``int(cascade[l] * K)`` of them with
    ``K = max_b n_b`` (official code). Padded tokens always rank last and
    are never marked as updated.

    Args:
        embed_dims (int): token width. Defaults to 256.
        num_levels (int): number of feature levels (any >= 1).
            Defaults to 4.
        keep_ratio (float): share of real tokens in the first foreground
            set ("focus_rho"). Defaults to 0.5.
        cascade (Sequence[float]): per encoder layer, share of the first set
            the layer updates. Defaults to [1.0, 0.8, 0.6, 0.6, 0.4, 0.2].
        per_image_budget (bool): False (official): image b updates the first
            ``min(k_l, n_b)`` tokens of layer l's ranking, where
            ``k_l = int(c_l * max_b n_b)`` -- a small image's count depends
            on its batch partners. True: exactly ``int(c_l * n_b)`` tokens.
            Defaults to False.
        align_corners (bool): of the bilinear score upsampling.
            Defaults to True (official PyTorch code).
        alpha_init (float): the modulation coefficients start at
            U(-alpha_init, alpha_init). Defaults to 0.3.
        init_cfg (dict, optional): mmengine init config.
    """
    keeps_own_init = True

    def __init__(self,
                 embed_dims: int = 256,
                 num_levels: int = 4,
                 keep_ratio: float = 0.5,
                 cascade: Sequence[float] = (1.0, 0.8, 0.6, 0.6, 0.4, 0.2),
                 per_image_budget: bool = False,
                 align_corners: bool = True,
                 alpha_init: float = 0.3,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if num_levels < 1:
            raise ValueError('ForegroundTokenSelector: num_levels must be '
                             f'>= 1, got {num_levels}')
        self.embed_dims = embed_dims
        self.num_levels = num_levels
        if isinstance(keep_ratio, bool) or not isinstance(
                keep_ratio, numbers.Real):
            raise ValueError(
                'ForegroundTokenSelector: keep_ratio must be one number in '
                f'(0, 1], got {keep_ratio!r} (the per-layer shares are '
                'cascade)')
        self.keep_ratio = _check_fraction_list('keep_ratio', [keep_ratio])[0]
        self.cascade = _check_fraction_list('cascade', cascade)
        self.per_image_budget = bool(per_image_budget)
        self.align_corners = bool(align_corners)
        self.alpha_init = float(alpha_init)
        self.scorer = FTSScorer(embed_dims)
        self.alpha = nn.Parameter(torch.zeros(max(num_levels - 1, 0)))
        self.init_weights()

    def init_weights(self) -> None:
        """Xavier on the scorer's matrices (the official transformer-wide
        Xavier pass), U(-a, a) on the modulation coefficients."""
        for p in self.scorer.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        nn.init.uniform_(self.alpha, -self.alpha_init, self.alpha_init)

    @property
    def num_layers(self) -> int:
        return len(self.cascade)

    def score(self,
              z: Tensor,
              spatial_shapes: Tensor,
              valid: Optional[Tensor] = None) -> Tensor:
        """Foreground logits of all tokens with top-down modulation.

        Args:
            z (Tensor): (bs, N, C) scorer input (DINO's ``memory_trans`` of
                feature + position, see :class:`FocusDETR`).
            spatial_shapes (Tensor): (num_levels, 2) (h, w) per level.
            valid (Tensor, optional): (bs, N) bool, True = real token.

        Returns:
            Tensor: (bs, N) raw logits, level-major like ``z``.
        """
        shapes = [(int(h), int(w)) for h, w in spatial_shapes.tolist()]
        if len(shapes) != self.num_levels:
            raise ValueError(
                f'ForegroundTokenSelector built for num_levels='
                f'{self.num_levels} got {len(shapes)} feature levels')
        bs = z.shape[0]
        starts = [0]
        for h, w in shapes:
            starts.append(starts[-1] + h * w)
        scores: List[Optional[Tensor]] = [None] * self.num_levels
        for lvl in range(self.num_levels - 1, -1, -1):
            h, w = shapes[lvl]
            sl = slice(starts[lvl], starts[lvl + 1])
            z_l = z[:, sl]
            v_l = None if valid is None else valid[:, sl]
            if lvl < self.num_levels - 1:
                hu, wu = shapes[lvl + 1]
                up = F.interpolate(
                    scores[lvl + 1].view(bs, 1, hu, wu),
                    size=(h, w),
                    mode='bilinear',
                    align_corners=self.align_corners).view(bs, h * w, 1)
                a = self.alpha[self.num_levels - 2 - lvl]
                z_l = z_l + z_l * (a * up).to(z_l.dtype)
            scores[lvl] = self.scorer(z_l, v_l)
        return torch.cat(scores, dim=1)

    def budgets(self, valid: Tensor) -> Tensor:
        """(bs,) long: ``n_b = floor(keep_ratio * V_b) + 1`` (float32 math),
        never more than V_b (an image with a single real token keeps 1)."""
        num = valid.sum(1)
        n = torch.floor(num.float() * self.keep_ratio).long() + 1
        return torch.minimum(n, num.clamp(min=1))

    def layer_sizes(self, n_b: Tensor) -> List[int]:
        """Batch-wide gather sizes ``k_l = int(c_l * max_b n_b)`` (float32
        product, truncated, as in the official code)."""
        k = np.float32(int(n_b.max()))  # the one host sync of the budget
        return [int(np.float32(c) * k) for c in self.cascade]

    def select(self,
               logits: Tensor,
               key_padding_mask: Optional[Tensor] = None) -> Dict:
        """Pick the nested foreground sets of all encoder layers.

        Args:
            logits (Tensor): (bs, N) foreground logits from :meth:`score`.
            key_padding_mask (Tensor, optional): (bs, N) bool, True = padded;
                None = every token real.

        Returns:
            dict: ``indices`` (bs, k_0) long, token indices sorted by
            descending score (layer l uses ``indices[:, :k_l]``);
            ``sizes`` list of k_l; ``updates`` list of (bs, k_l) bool, True
            where the entry is a real token that layer l writes back;
            ``budget`` (bs,) n_b; ``valid`` (bs, N) bool.
        """
        bs, n = logits.shape
        valid = valid_mask(key_padding_mask, bs, n, logits.device)
        ranked = logits.detach().float().masked_fill(~valid, float('-inf'))
        n_b = self.budgets(valid)
        sizes = [max(1, min(k, n)) for k in self.layer_sizes(n_b)]
        indices = ranked.topk(sizes[0], dim=1).indices
        num_real = valid.sum(1, keepdim=True)
        pos = torch.arange(sizes[0], device=logits.device)[None]
        updates = []
        for c, k in zip(self.cascade, sizes):
            if self.per_image_budget:
                limit = torch.floor(
                    n_b.float() *
                    torch.tensor(c, dtype=torch.float32)).long()[:, None]
            else:
                limit = n_b[:, None]
            limit = torch.minimum(limit, num_real)
            updates.append(pos[:, :k] < limit)
        return dict(
            indices=indices,
            sizes=sizes,
            updates=updates,
            budget=n_b,
            valid=valid)

    def extra_repr(self) -> str:
        return (f'num_levels={self.num_levels}, keep_ratio={self.keep_ratio}'
                f', cascade={self.cascade}, per_image_budget='
                f'{self.per_image_budget}')
