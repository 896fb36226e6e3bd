"""The interleaved encoder of Lite DETR (CVPR 2023)."""
import copy
from typing import Optional

import torch
from mmcv.cnn import build_norm_layer
from mmcv.cnn.bricks.transformer import FFN
from mmdet.registry import MODELS
from mmdet.utils import ConfigType, OptConfigType
from mmengine.model import ModuleList
from torch import Tensor

from ..common.builder import build_or_default
from ..common.layers import (EffDeformableDetrTransformerEncoder,
                             EffDeformableDetrTransformerEncoderLayer)

#: mmdet's default FFN of a DETR encoder layer
_DEFAULT_FFN = dict(
    embed_dims=256,
    feedforward_channels=1024,
    num_fcs=2,
    ffn_drop=0.,
    act_cfg=dict(type='ReLU', inplace=True))

#: layer kinds: updates the high-level tokens only / all tokens
HIGH, ALL = 'H', 'A'


@MODELS.register_module()
class LiteEncoderLayer(EffDeformableDetrTransformerEncoderLayer):
    """Deformable encoder layer whose queries may be a subset of the tokens.

    The attention reads ``value`` (all tokens of all levels) while only
    ``query`` is updated.  With ``low_ffn_cfg`` the first
    ``num_low_queries`` queries (the low-level tokens) go through a second,
    small FFN and its own LayerNorm (``low_ffn``, ``norms[2]``; the official
    ``linear12 / linear22 / norm22``) and the rest through the normal FFN.

    Args:
        low_ffn_cfg (dict, optional): config of the low-level FFN (built
            with mmcv's ``FFN`` unless it has a ``type``). None: no low FFN.
        **kwargs: the arguments of mmdet's
            ``DeformableDetrTransformerEncoderLayer``.
    """

    def __init__(self, *args, low_ffn_cfg: OptConfigType = None,
                 **kwargs) -> None:
        self.low_ffn_cfg = copy.deepcopy(low_ffn_cfg)
        super().__init__(*args, **kwargs)

    def _init_layers(self) -> None:
        super()._init_layers()
        self.low_ffn = None
        if self.low_ffn_cfg is not None:
            self.low_ffn = build_or_default(self.low_ffn_cfg, FFN)
            self.norms.append(
                build_norm_layer(self.norm_cfg, self.embed_dims)[1])

    def forward(self,
                query: Tensor,
                query_pos: Optional[Tensor],
                key_padding_mask: Optional[Tensor],
                value: Optional[Tensor] = None,
                num_low_queries: int = 0,
                **kwargs) -> Tensor:
        """Attention over ``value`` (``query`` when None), then the FFN(s).

        Args:
            query (Tensor): (bs, num_queries, C) tokens to update.
            query_pos (Tensor, optional): their positional embeddings.
            key_padding_mask (Tensor, optional): (bs, num_values) padding
                of ``value``; None: all valid.
            value (Tensor, optional): (bs, num_values, C) all tokens.
            num_low_queries (int): how many leading queries are low-level
                tokens (they use ``low_ffn`` when the layer has one).
            **kwargs: ``reference_points``, ``spatial_shapes``, ... for the
                attention.

        Returns:
            Tensor: (bs, num_queries, C) updated queries.
        """
        query = self.self_attn(
            query=query,
            key=None,
            value=query if value is None else value,
            query_pos=query_pos,
            key_padding_mask=key_padding_mask,
            **kwargs)
        query = self.norms[0](query)
        if self.low_ffn is None or num_low_queries <= 0:
            return self.norms[1](self.ffn(query))
        low = self.norms[2](self.low_ffn(query[:, :num_low_queries]))
        if num_low_queries >= query.shape[1]:
            return low
        high = self.norms[1](self.ffn(query[:, num_low_queries:]))
        return torch.cat([low, high], 1)


@MODELS.register_module()
class InterleavedLiteEncoder(EffDeformableDetrTransformerEncoder):
    """Lite DETR's interleaved encoder; drop-in for mmdet's
    ``DeformableDetrTransformerEncoder`` (same forward and output).

    Tokens of the ``num_high_levels`` smallest maps (the last levels) are
    high-level, the others low-level.  The ``num_layers`` layers form
    ``num_blocks`` blocks ("(A+1)xB" with A = num_layers / num_blocks and
    B = num_blocks); in each block the first A-1 layers (H) update only the
    high-level tokens and the last one (A) updates all tokens, the low-level
    ones through a small FFN.  Every layer attends to all tokens of all
    levels; the low-level tokens stay stale between A layers.  This is the
    released code's schedule (e.g. (2+1)x3 = ``HAHAHA``).

    Args:
        num_layers (int): encoder layers (A x B). Defaults to 6.
        layer_cfg (dict): config of every layer (mmdet's encoder layer
            arguments; built as :class:`LiteEncoderLayer` unless it has a
            ``type``). Its attention may be ``KDAttention`` or mmcv's MSDA.
        num_blocks (int): B, the number of low-level updates. Defaults to 3.
        num_high_levels (int): levels holding high-level tokens, 3 for H3L1,
            2 for H2L2; in [1, num_levels]. Defaults to 3.
        low_ffn_channels (int, optional): hidden size of the low-level FFN of
            the A layers (``small_expand``); None gives them the normal FFN
            for all tokens. Defaults to 256.
        low_level_queries_only (bool): the paper-figure variant: an A layer
            queries only the low-level tokens and leaves the high-level ones
            as they are. Defaults to False (released code).
        num_cp (int): layers with gradient checkpointing. Defaults to -1.
        init_cfg (dict, optional): mmengine init config.
    """

    def __init__(self,
                 num_layers: int = 6,
                 layer_cfg: ConfigType = dict(),
                 num_blocks: int = 3,
                 num_high_levels: int = 3,
                 low_ffn_channels: Optional[int] = 256,
                 low_level_queries_only: bool = False,
                 num_cp: int = -1,
                 init_cfg: OptConfigType = None) -> None:
        if not isinstance(num_blocks, int) or num_blocks < 1:
            raise ValueError('InterleavedLiteEncoder: num_blocks must be a '
                             f'positive int, got num_blocks={num_blocks}')
        if num_layers % num_blocks != 0:
            raise ValueError(
                'InterleavedLiteEncoder: num_layers must be divisible by '
                f'num_blocks, got num_layers={num_layers} and '
                f'num_blocks={num_blocks}; allowed num_blocks: '
                f'{[b for b in range(1, num_layers + 1) if num_layers % b == 0]}'  # noqa
            )
        if low_ffn_channels is not None and (not isinstance(
                low_ffn_channels, int) or low_ffn_channels < 1):
            raise ValueError('InterleavedLiteEncoder: low_ffn_channels must '
                             'be a positive int or None, got '
                             f'low_ffn_channels={low_ffn_channels}')
        self.num_blocks = num_blocks
        self.num_high_levels = num_high_levels
        self.low_ffn_channels = low_ffn_channels
        self.low_level_queries_only = bool(low_level_queries_only)
        per_block = num_layers // num_blocks
        self.layer_types = ''.join(
            ALL if (i + 1) % per_block == 0 else HIGH
            for i in range(num_layers))
        super().__init__(
            num_layers=num_layers,
            layer_cfg=layer_cfg,
            num_cp=num_cp,
            init_cfg=init_cfg)

    def _init_layers(self) -> None:
        layer_cfg = copy.deepcopy(dict(self.layer_cfg))
        layer_cfg.setdefault('type', 'LiteEncoderLayer')
        name = layer_cfg['type']
        cls = MODELS.get(name) if isinstance(name, str) else name
        if not (isinstance(cls, type) and issubclass(cls, LiteEncoderLayer)):
            raise ValueError(
                'InterleavedLiteEncoder: layer_cfg.type must be '
                'LiteEncoderLayer or a subclass (its layers take a value '
                f'input and a low-level FFN), got {name!r}')
        layers = []
        for kind in self.layer_types:
            cfg = copy.deepcopy(layer_cfg)
            if kind == ALL and self.low_ffn_channels is not None:
                ffn_cfg = dict(cfg.get('ffn_cfg') or _DEFAULT_FFN)
                ffn_cfg['feedforward_channels'] = self.low_ffn_channels
                cfg['low_ffn_cfg'] = ffn_cfg
            layers.append(MODELS.build(cfg))
        self.layers = ModuleList(layers)
        self.embed_dims = self.layers[0].embed_dims
        self.num_levels = self.layers[0].self_attn.num_levels
        if not 1 <= self.num_high_levels <= self.num_levels:
            raise ValueError(
                'InterleavedLiteEncoder: num_high_levels must be in '
                f'[1, {self.num_levels}] (the attention has '
                f'{self.num_levels} levels), got '
                f'num_high_levels={self.num_high_levels}')
        self._wrap_checkpoint()

    def forward(self, query: Tensor, query_pos: Tensor,
                key_padding_mask: Optional[Tensor], spatial_shapes: Tensor,
                level_start_index: Tensor, valid_ratios: Tensor,
                **kwargs) -> Tensor:
        """Run the interleaved schedule.

        Args:
            query (Tensor): (bs, num_tokens, C) flattened features of all
                levels, largest map first.
            query_pos (Tensor): (bs, num_tokens, C) positional + level
                embeddings.
            key_padding_mask (Tensor, optional): (bs, num_tokens), True at
                padding; None: all valid.
            spatial_shapes (Tensor): (num_levels, 2) level shapes (h, w).
            level_start_index (Tensor): (num_levels,) level offsets.
            valid_ratios (Tensor): (bs, num_levels, 2) valid (w, h) ratios.

        Returns:
            Tensor: (bs, num_tokens, C) memory, every token updated by the
            last layer, in the input order.
        """
        ref = self.get_encoder_reference_points(
            spatial_shapes, valid_ratios, device=query.device)
        num_low_levels = self.num_levels - self.num_high_levels
        # one host sync: the split point of low / high tokens
        split = int(spatial_shapes[:num_low_levels].prod(-1).sum())
        memory = query
        for layer, kind in zip(self.layers, self.layer_types):
            shared = dict(
                value=memory,
                key_padding_mask=key_padding_mask,
                spatial_shapes=spatial_shapes,
                level_start_index=level_start_index,
                valid_ratios=valid_ratios,
                **kwargs)
            if kind == HIGH:
                high = layer(
                    query=memory[:, split:],
                    query_pos=_part(query_pos, split, None),
                    reference_points=ref[:, split:],
                    num_low_queries=0,
                    **shared)
                memory = torch.cat([memory[:, :split], high], 1)
            elif self.low_level_queries_only:
                if split == 0:
                    continue
                low = layer(
                    query=memory[:, :split],
                    query_pos=_part(query_pos, 0, split),
                    reference_points=ref[:, :split],
                    num_low_queries=split,
                    **shared)
                memory = torch.cat([low, memory[:, split:]], 1)
            else:
                memory = layer(
                    query=memory,
                    query_pos=query_pos,
                    reference_points=ref,
                    num_low_queries=split,
                    **shared)
        return memory


def _part(x: Optional[Tensor], start: int, end: Optional[int]):
    """``x[:, start:end]``, or None."""
    return None if x is None else x[:, start:end]
