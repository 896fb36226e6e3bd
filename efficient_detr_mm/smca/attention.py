"""Spatially modulated co-attention (SMCA's decoder cross-attention)."""
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from mmcv.cnn.bricks.transformer import MultiheadAttention
from mmdet.registry import MODELS
from torch import Tensor

from ..common import attention_weights, merge_heads, split_heads


@MODELS.register_module()
class SMCACoAttention(MultiheadAttention):
    """mmcv's ``MultiheadAttention`` (same parameters, so DETR weights load)
    whose logits get an additive ``attn_bias`` (SMCA's ``log G``) before the
    softmax; padded keys stay excluded.

    With ``level_sizes`` (multi-scale SMCA) the keys are split into
    segments, the softmax is taken within each segment and the segments'
    outputs are mixed with per-image, per-query weights ``level_weights``
    (shared by the heads): ``out = sum_j alpha_j softmax_j(...) V_j``.

    Args: as mmcv's ``MultiheadAttention``; only ``batch_first=True``.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if not self.batch_first:
            raise ValueError(
                f'{type(self).__name__} needs batch_first=True, got False')

    def _project(self, query: Tensor, key: Tensor, value: Tensor):
        w_q, w_k, w_v = self.attn.in_proj_weight.chunk(3)
        b = self.attn.in_proj_bias
        b_q, b_k, b_v = b.chunk(3) if b is not None else (None, ) * 3
        m = self.num_heads
        return (split_heads(F.linear(query, w_q, b_q), m),
                split_heads(F.linear(key, w_k, b_k), m),
                split_heads(F.linear(value, w_v, b_v), m))

    def forward(self,
                query: Tensor,
                key: Tensor = None,
                value: Tensor = None,
                identity: Tensor = None,
                query_pos: Tensor = None,
                key_pos: Tensor = None,
                attn_mask: Tensor = None,
                key_padding_mask: Tensor = None,
                attn_bias: Optional[Tensor] = None,
                level_sizes: Optional[Sequence[int]] = None,
                level_weights: Optional[Tensor] = None,
                **kwargs) -> Tensor:
        """
        Args:
            query (Tensor): (bs, nq, C).
            key, value (Tensor): (bs, nk, C); ``key`` defaults to ``query``
                and ``value`` to ``key``.
            identity (Tensor, optional): residual, defaults to ``query``.
            query_pos, key_pos (Tensor, optional): added to query / key.
            attn_mask (Tensor, optional): (nq, nk) or (bs * heads, nq, nk);
                bool (True = blocked) or float (added to the logits).
            key_padding_mask (Tensor, optional): (bs, nk), True = padded;
                None means every key is valid.
            attn_bias (Tensor, optional): ``log G``, broadcastable to
                (bs, heads, nq, nk).
            level_sizes (Sequence[int], optional): key segment lengths for
                the per-segment softmax (multi-scale SMCA).
            level_weights (Tensor, optional): (bs, nq, num_segments) weights
                alpha of the segments.

        Returns:
            Tensor: (bs, nq, C), ``identity + dropout(out_proj(attention))``.
        """
        key = query if key is None else key
        value = key if value is None else value
        identity = query if identity is None else identity
        if key_pos is None and query_pos is not None and \
                query_pos.shape == key.shape:
            key_pos = query_pos
        if query_pos is not None:
            query = query + query_pos
        if key_pos is not None:
            key = key + key_pos
        bs, nq, _ = query.shape
        q, k, v = self._project(query, key, value)
        bias = attn_bias
        if attn_mask is not None:
            extra = attn_mask
            if extra.dtype == torch.bool:
                extra = torch.zeros_like(extra, dtype=torch.float32)\
                    .masked_fill(attn_mask, float('-inf'))
            if extra.dim() == 3:
                extra = extra.view(bs, self.num_heads, nq, -1)
            bias = extra if bias is None else bias + extra
        if level_sizes is None or len(level_sizes) == 1:
            weights = attention_weights(q, k, key_padding_mask, bias)
        else:
            weights = self._level_weights(q, k, key_padding_mask, bias,
                                          level_sizes, level_weights)
        weights = F.dropout(
            weights, p=self.attn.dropout, training=self.training)
        out = merge_heads(torch.matmul(weights.to(v.dtype), v))
        out = self.attn.out_proj(out)
        return identity + self.dropout_layer(self.proj_drop(out))

    def _level_weights(self, q: Tensor, k: Tensor,
                       key_padding_mask: Optional[Tensor],
                       bias: Optional[Tensor], level_sizes: Sequence[int],
                       level_weights: Optional[Tensor]) -> Tensor:
        """Per-segment softmax, each segment scaled by its alpha."""
        if level_weights is None:
            raise ValueError('level_sizes needs level_weights (alpha)')
        if level_weights.shape[-1] != len(level_sizes):
            raise ValueError(
                f'level_weights has {level_weights.shape[-1]} levels, '
                f'level_sizes {len(level_sizes)}')
        ks = k.split(list(level_sizes), dim=2)
        masks = (key_padding_mask.split(list(level_sizes), dim=1)
                 if key_padding_mask is not None else [None] * len(ks))
        biases = (bias.split(list(level_sizes), dim=-1)
                  if bias is not None else [None] * len(ks))
        alpha = level_weights.float()[:, None, :, :]  # (bs, 1, nq, L)
        return torch.cat([
            attention_weights(q, k_l, m_l, b_l) * alpha[..., lvl, None]
            for lvl, (k_l, m_l, b_l) in enumerate(zip(ks, masks, biases))
        ], dim=-1)

    def flop_count(self, args: tuple, kwargs: dict, output) -> int:
        """Multiply-adds of one call: q / k / v / out projections,
        ``q k^T``, ``A v`` and, for several key segments, the alpha
        products (the additive ``log G`` costs no multiplication; the map
        itself is counted by :class:`SMCAGaussian`)."""
        names = ['query', 'key', 'value']
        bound = dict(zip(names, args))
        bound.update(kwargs)
        query = bound['query']
        key = bound.get('key')
        key = query if key is None else key
        bs, nq, c = query.shape
        nk = key.shape[1]
        macs = bs * (2 * nq + 2 * nk) * c * c + 2 * bs * nq * nk * c
        sizes = bound.get('level_sizes')
        if sizes is not None and len(sizes) > 1:
            macs += bs * self.num_heads * nq * nk
        return macs
