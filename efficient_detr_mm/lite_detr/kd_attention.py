"""Key-aware deformable attention (KDA) of Lite DETR (CVPR 2023)."""
import math
from typing import Any, Optional, Tuple

import torch
from mmcv.ops import MultiScaleDeformableAttention
from mmdet.registry import MODELS
from mmengine.model import constant_init, xavier_init
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from ..common.deform_sampling import (deform_sampling_locations,
                                      multi_scale_bilinear_sample)

#: MACs per channel of one bilinear sample (fvcore's grid_sample convention)
BILINEAR_MACS = 4


@MODELS.register_module()
class KDAttention(MultiScaleDeformableAttention):
    """Key-aware deformable attention.

    Offsets are predicted from the query exactly as in multi-scale deformable
    attention (MSDA), but the attention weights are not: keys are sampled at
    the same points as the values, and the weights are the softmax, jointly
    over all ``num_levels * num_points`` samples of a head, of
    ``query_proj(query) . key / sqrt(head_dims)``.  With ``proj_key=False``
    (the released setting) the keys ARE the projected values, so they are
    sampled once.  Pure PyTorch (``grid_sample``), any device; logits and
    softmax in fp32.

    Drop-in for mmcv's :class:`MultiScaleDeformableAttention` (same forward
    and residual contract, and mmdet's detectors re-run its init after their
    Xavier pass because it is a subclass).  It has no ``attention_weights``
    linear and adds ``query_proj`` (and ``key_proj`` with ``proj_key``), as
    the official ``MSDeformAttn(key_aware=True)``.

    Args:
        embed_dims (int): channels. Defaults to 256.
        num_heads (int): heads. Defaults to 8.
        num_levels (int): feature levels. Defaults to 4.
        num_points (int): sampling points per head and level. Defaults to 4.
        im2col_step (int): unused, kept for config compatibility with MSDA.
        dropout (float): dropout on the output before the residual.
            Defaults to 0.1.
        batch_first (bool): (bs, n, c) inputs. Defaults to False.
        norm_cfg (dict, optional): unused, as in MSDA.
        init_cfg (dict, optional): mmengine init config.
        value_proj_ratio (float): must be 1 (the keys are dotted with
            ``embed_dims``-wide queries). Defaults to 1.0.
        proj_key (bool): keys from a separate ``key_proj`` of the value input
            instead of the value projection. Defaults to False (released).
        same_loc (bool): one set of offsets shared by all levels
            (``sampling_offsets`` predicts ``heads * points * 2``). Defaults
            to False (released config).
        with_cp (bool): recompute the sampling and weighting in backward
            (``torch.utils.checkpoint``) instead of keeping the sampled
            tensors, as the official ``deformable_use_checkpoint``. Defaults
            to False.
    """
    keeps_own_init = True

    def __init__(self,
                 embed_dims: int = 256,
                 num_heads: int = 8,
                 num_levels: int = 4,
                 num_points: int = 4,
                 im2col_step: int = 64,
                 dropout: float = 0.1,
                 batch_first: bool = False,
                 norm_cfg: Optional[dict] = None,
                 init_cfg: Optional[dict] = None,
                 value_proj_ratio: float = 1.0,
                 proj_key: bool = False,
                 same_loc: bool = False,
                 with_cp: bool = False) -> None:
        if value_proj_ratio != 1.0:
            raise ValueError('KDAttention needs value_proj_ratio=1.0 (keys '
                             'are dotted with embed_dims-wide queries), got '
                             f'value_proj_ratio={value_proj_ratio}')
        self.proj_key = bool(proj_key)
        self.same_loc = bool(same_loc)
        self.with_cp = bool(with_cp)
        self._building = True  # parent __init__ calls init_weights early
        super().__init__(
            embed_dims=embed_dims,
            num_heads=num_heads,
            num_levels=num_levels,
            num_points=num_points,
            im2col_step=im2col_step,
            dropout=dropout,
            batch_first=batch_first,
            norm_cfg=norm_cfg,
            init_cfg=init_cfg,
            value_proj_ratio=value_proj_ratio)
        del self.attention_weights
        if self.same_loc:
            self.sampling_offsets = nn.Linear(embed_dims,
                                              num_heads * num_points * 2)
        self.query_proj = nn.Linear(embed_dims, embed_dims)
        self.key_proj = (
            nn.Linear(embed_dims, embed_dims) if self.proj_key else None)
        self._building = False
        self.init_weights()

    @property
    def head_dims(self) -> int:
        """Channels per head."""
        return self.embed_dims // self.num_heads

    def init_weights(self) -> None:
        """Zero offset weights with the MSDA direction grid as bias;
        Xavier-uniform with zero bias for the value / query / key / output
        projections."""
        if getattr(self, '_building', False):
            return
        constant_init(self.sampling_offsets, 0.)
        device = self.sampling_offsets.weight.device
        thetas = torch.arange(
            self.num_heads, dtype=torch.float32,
            device=device) * (2.0 * math.pi / self.num_heads)
        grid = torch.stack([thetas.cos(), thetas.sin()], -1)
        grid = grid / grid.abs().max(-1, keepdim=True)[0]
        levels = 1 if self.same_loc else self.num_levels
        grid = grid.view(self.num_heads, 1, 1, 2).repeat(
            1, levels, self.num_points, 1)
        grid *= torch.arange(
            1, self.num_points + 1, dtype=torch.float32,
            device=device).view(1, 1, -1, 1)
        self.sampling_offsets.bias.data = grid.view(-1)
        for proj in (self.value_proj, self.query_proj, self.key_proj,
                     self.output_proj):
            if proj is not None:
                xavier_init(proj, distribution='uniform', bias=0.)
        self._is_init = True

    def forward(self,
                query: Tensor,
                key: Optional[Tensor] = None,
                value: Optional[Tensor] = None,
                identity: Optional[Tensor] = None,
                query_pos: Optional[Tensor] = None,
                key_padding_mask: Optional[Tensor] = None,
                reference_points: Optional[Tensor] = None,
                spatial_shapes: Optional[Tensor] = None,
                level_start_index: Optional[Tensor] = None,
                **kwargs) -> Tensor:
        """Key-aware deformable attention plus the residual.

        Args:
            query (Tensor): (num_query, bs, C), or (bs, num_query, C) when
                ``batch_first``.
            key (Tensor, optional): ignored (keys come from ``value``), as in
                MSDA.
            value (Tensor, optional): (num_value, bs, C) / (bs, num_value, C)
                flattened multi-scale features; ``query`` when None.
            identity (Tensor, optional): residual; ``query`` when None.
            query_pos (Tensor, optional): added to ``query`` (offsets and
                query projection); not to the residual.
            key_padding_mask (Tensor, optional): (bs, num_value), True at
                padded values; their keys and values are zeroed (a sample on
                them gets logit 0, as in the official code).  None: all
                valid.
            reference_points (Tensor): (bs, num_query, num_levels, 2) points
                or (bs, num_query, num_levels, 4) boxes, normalised.
            spatial_shapes (Tensor): (num_levels, 2) level shapes (h, w).
            level_start_index (Tensor): (num_levels,) unused (kept for the
                MSDA signature).

        Returns:
            Tensor: ``dropout(output_proj(attention)) + identity``, shaped as
            ``query``.
        """
        if value is None:
            value = query
        if identity is None:
            identity = query
        if query_pos is not None:
            query = query + query_pos
        if not self.batch_first:
            query = query.permute(1, 0, 2)
            value = value.permute(1, 0, 2)
        core_args = (query, value, key_padding_mask, reference_points,
                     spatial_shapes)
        if self.with_cp and torch.is_grad_enabled():
            output = checkpoint(self._attend, *core_args, use_reentrant=False)
        else:
            output = self._attend(*core_args)
        # (bs, heads, head_dims, nq) -> (bs, nq, C)
        output = output.flatten(1, 2).transpose(1, 2)
        output = self.output_proj(output.to(query.dtype))
        if not self.batch_first:
            output = output.permute(1, 0, 2)
        return self.dropout(output) + identity

    def _attend(self, *args) -> Tensor:
        """Weighted sum of the sampled values, (bs, heads, head_dims, nq),
        for the arguments of :meth:`sample_and_weigh`."""
        values, weights, _ = self.sample_and_weigh(*args)
        return (values * weights.to(values.dtype).unsqueeze(2)).sum(-1)

    def sample_and_weigh(self, query: Tensor, value: Tensor,
                         key_padding_mask: Optional[Tensor],
                         reference_points: Tensor,
                         spatial_shapes: Tensor) -> Tuple[Tensor, ...]:
        """Sampled values and their key-aware attention weights.

        Args:
            query (Tensor): (bs, num_query, C), positional embedding added.
            value (Tensor): (bs, num_value, C) value input.
            key_padding_mask (Tensor, optional): (bs, num_value) padding.
            reference_points (Tensor): (bs, num_query, num_levels, 2 or 4).
            spatial_shapes (Tensor): (num_levels, 2) shapes (h, w).

        Returns:
            tuple[Tensor]: sampled values (bs, heads, head_dims, num_query,
            num_levels * num_points); fp32 weights (bs, heads, num_query,
            num_levels * num_points), summing to 1; sampling locations
            (bs, num_query, heads, num_levels, num_points, 2).
        """
        bs, num_query, _ = query.shape
        num_value = value.shape[1]
        heads, levels, points = (self.num_heads, self.num_levels,
                                 self.num_points)
        maps = self.value_proj(value)
        if self.proj_key:
            # keys and values share the locations: sample them together
            maps = torch.cat([maps, self.key_proj(value)], -1)
        if key_padding_mask is not None:
            maps = maps.masked_fill(key_padding_mask[..., None], 0.0)
        maps = maps.view(bs, num_value, 1 + self.proj_key, heads,
                         self.head_dims).transpose(2, 3).flatten(3)

        offsets = self.sampling_offsets(query).view(
            bs, num_query, heads, 1 if self.same_loc else levels, points, 2)
        if self.same_loc:
            offsets = offsets.expand(-1, -1, -1, levels, -1, -1)
        locations = deform_sampling_locations(reference_points, offsets,
                                              spatial_shapes)
        # (bs, heads, (1 + proj_key) * head_dims, nq, levels * points)
        samples = multi_scale_bilinear_sample(maps, spatial_shapes,
                                              locations).flatten(-2)
        values = samples[:, :, :self.head_dims]
        keys = samples[:, :, self.head_dims:] if self.proj_key else values

        q = self.query_proj(query).view(bs, num_query, heads,
                                        self.head_dims).permute(0, 2, 3, 1)
        # (bs, heads, nq, levels * points), fp32 logits and softmax
        logits = (q.unsqueeze(-1).float() * keys.float()).sum(2)
        weights = (logits / math.sqrt(self.head_dims)).softmax(-1)
        return values, weights, locations

    def flop_count(self, args: tuple, kwargs: dict, output: Any) -> int:
        """Multiply-adds of one call (fvcore convention, 1 MAC = 1 FLOP).

        With ``nq`` queries and ``nv`` values over the batch, ``C`` channels,
        ``S = num_levels * num_points`` samples per head::

            value_proj (+ key_proj)  nv * C * C  (x2 with proj_key)
            sampling_offsets         nq * C * out_features
            query_proj               nq * C * C
            sampling                 4 * nq * C * S  per sampled map (the
                                     values; keys too with proj_key, else
                                     they are the same samples)
            key products             nq * C * S
            weighted sum             nq * C * S
            output_proj              nq * C * C

        Softmax, scaling and the residual are element-wise (0).
        """
        names = ('query', 'key', 'value')
        call = dict(zip(names, args))
        call.update({k: v for k, v in kwargs.items() if k in names})
        query = call['query']
        value = call.get('value')
        value = query if value is None else value
        c = self.embed_dims
        nq = query.numel() // query.shape[-1]
        nv = value.numel() // value.shape[-1]
        samples = self.num_levels * self.num_points
        maps = 1 + self.proj_key
        projections = (maps * nv * c * c +
                       nq * c * self.sampling_offsets.out_features +
                       2 * nq * c * c)
        core = (BILINEAR_MACS * maps + 2) * nq * c * samples
        return int(projections + core)
