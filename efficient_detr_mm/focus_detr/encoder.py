"""Focus-DETR encoder: per layer, dual attention on that layer's foreground
token set, scattered back into the full-length token map."""
import copy
from typing import Callable, Dict, Optional, Tuple

import torch
from mmcv.cnn import build_norm_layer
from mmcv.cnn.bricks.transformer import MultiheadAttention
from mmdet.registry import MODELS
from mmdet.utils import OptConfigType
from torch import Tensor

from ..common.builder import build_or_default
from ..common.layers import (EffDeformableDetrTransformerEncoder,
                             EffDeformableDetrTransformerEncoderLayer)
from ..common.tokens import gather_tokens, scatter_tokens

MC_SCORES = ('logit_product', 'prob_product')
VALUE_SOURCES = ('backbone', 'memory')


@MODELS.register_module()
class FocusEncoderLayer(EffDeformableDetrTransformerEncoderLayer):
    """One Focus-DETR encoder layer on a foreground token subset.

    ``OESM`` (self-attention among the fine-grained tokens, residual + its
    own LayerNorm) -> deformable attention of all subset tokens into the
    full multi-scale value -> norm -> FFN -> norm.  The deformable attention
    is ``self_attn`` (``self_attn_cfg``; any registered attention with
    mmcv's ``MultiScaleDeformableAttention`` call contract, e.g.
    ``KDAttention``), the OESM is ``oesm_attn`` (``oesm_cfg``, mmcv
    ``MultiheadAttention`` by default) with norm ``oesm_norm``.

    Args:
        oesm_cfg (dict, optional): config of the OESM attention.
            Defaults to 8 heads, dropout 0.
        **kwargs: ``self_attn_cfg``, ``ffn_cfg``, ``norm_cfg``, ``init_cfg``
            of mmdet's ``DeformableDetrTransformerEncoderLayer``.
    """

    def __init__(self,
                 oesm_cfg: OptConfigType = dict(
                     embed_dims=256, num_heads=8, dropout=0.0),
                 **kwargs) -> None:
        oesm_cfg = copy.deepcopy(dict(oesm_cfg or {}))
        if oesm_cfg.get('batch_first', True) is not True:
            raise ValueError('FocusEncoderLayer: oesm_cfg.batch_first must '
                             'be True')
        oesm_cfg['batch_first'] = True
        self.oesm_cfg = oesm_cfg
        super().__init__(**kwargs)

    def _init_layers(self) -> None:
        super()._init_layers()
        self.oesm_attn = build_or_default(self.oesm_cfg, MultiheadAttention)
        self.oesm_norm = build_norm_layer(self.norm_cfg, self.embed_dims)[1]

    def forward(self,
                query: Tensor,
                query_pos: Tensor,
                value: Tensor,
                value_padding_mask: Optional[Tensor],
                reference_points: Tensor,
                spatial_shapes: Tensor,
                level_start_index: Tensor,
                fine_index: Optional[Tensor] = None,
                fine_padding_mask: Optional[Tensor] = None,
                **kwargs) -> Tensor:
        """Args:
            query (Tensor): (bs, k, C) the layer's foreground tokens.
            query_pos (Tensor): (bs, k, C) their position embeddings.
            value (Tensor): (bs, N, C) full multi-scale value.
            value_padding_mask (Tensor, optional): (bs, N), True = padded.
            reference_points (Tensor): (bs, k, num_levels, 2).
            spatial_shapes (Tensor): (num_levels, 2).
            level_start_index (Tensor): (num_levels, ).
            fine_index (Tensor, optional): (bs, t) positions (into the k
                tokens) of the OESM tokens; None skips the OESM.
            fine_padding_mask (Tensor, optional): (bs, t), True = not a key.

        Returns:
            Tensor: (bs, k, C) updated tokens.
        """
        if fine_index is not None and fine_index.shape[1] > 0:
            t = gather_tokens(query, fine_index)
            tp = gather_tokens(query_pos, fine_index)
            t = self.oesm_attn(
                query=t,
                key=t,
                value=t,
                query_pos=tp,
                key_pos=tp,
                key_padding_mask=fine_padding_mask)
            query = scatter_tokens(query, fine_index, self.oesm_norm(t))
        query = self.self_attn(
            query=query,
            key=value,
            value=value,
            query_pos=query_pos,
            key_padding_mask=value_padding_mask,
            reference_points=reference_points,
            spatial_shapes=spatial_shapes,
            level_start_index=level_start_index,
            **kwargs)
        query = self.norms[0](query)
        query = self.ffn(query)
        return self.norms[1](query)


@MODELS.register_module()
class FocusEncoder(EffDeformableDetrTransformerEncoder):
    """Focus-DETR encoder (dual attention on cascaded foreground sets).

    Layer l gathers the first ``k_l`` tokens of the selector's ranking,
    ranks them by the multi-category score (foreground score x class score
    of the shared encoder class head), lets the top ``num_fine_tokens``
    attend to each other (OESM), runs deformable attention + FFN for all
    ``k_l`` and writes back the entries the selector marks as updated; all
    other tokens pass through bit-identical.

    Args:
        num_layers (int): number of layers.
        layer_cfg (dict): config of :class:`FocusEncoderLayer` (or of a
            registered layer with ``type``).
        num_fine_tokens (int): OESM tokens per layer (clamped to the set
            size). Defaults to 300.
        mc_score (str): 'logit_product' (official code: max class logit x
            foreground logit) or 'prob_product' (paper: sigmoid x sigmoid).
        value_source (str): 'backbone' (official PyTorch code: deformable
            attention samples the encoder input) or 'memory' (the current
            token map, as DINO / Sparse DETR / the MindSpore port).
        num_cp (int): layers with gradient checkpointing (fairscale).
        init_cfg (dict, optional): mmengine init config.
    """

    def __init__(self,
                 num_layers: int,
                 layer_cfg: OptConfigType,
                 num_fine_tokens: int = 300,
                 mc_score: str = 'logit_product',
                 value_source: str = 'backbone',
                 num_cp: int = -1,
                 init_cfg: OptConfigType = None) -> None:
        if mc_score not in MC_SCORES:
            raise ValueError(f'FocusEncoder: mc_score must be one of '
                             f'{MC_SCORES}, got {mc_score!r}')
        if value_source not in VALUE_SOURCES:
            raise ValueError(f'FocusEncoder: value_source must be one of '
                             f'{VALUE_SOURCES}, got {value_source!r}')
        if int(num_fine_tokens) < 0:
            raise ValueError('FocusEncoder: num_fine_tokens must be >= 0, '
                             f'got {num_fine_tokens}')
        self.num_fine_tokens = int(num_fine_tokens)
        self.mc_score = mc_score
        self.value_source = value_source
        super().__init__(
            num_layers=num_layers,
            layer_cfg=layer_cfg,
            num_cp=num_cp,
            init_cfg=init_cfg)

    default_layer = FocusEncoderLayer

    def fine_tokens(self, query: Tensor, fg_logits: Tensor, updates: Tensor,
                    cls_branch: Optional[Callable]) -> Tuple[Tensor, Tensor]:
        """Choose the OESM tokens among a layer's foreground set.

        Args:
            query (Tensor): (bs, k, C) the set's tokens.
            fg_logits (Tensor): (bs, k) their foreground logits.
            updates (Tensor): (bs, k) bool, True = real, written-back token.
            cls_branch (Callable, optional): class head; None ranks by the
                foreground score alone.

        Returns:
            tuple: (bs, t) positions into the set, sorted by descending
            score, and (bs, t) bool key padding mask (True = not a real
            token of the set; the best entry is always a key).
        """
        with torch.no_grad():
            f = fg_logits.float()
            if cls_branch is None:
                m = f
            else:
                c = cls_branch(query).float().max(-1).values
                m = c * f if self.mc_score == 'logit_product' else \
                    c.sigmoid() * f.sigmoid()
            m = m.masked_fill(~updates, float('-inf'))
            t = min(self.num_fine_tokens, m.shape[1])
            index = m.topk(t, dim=1).indices
        padding = ~updates.gather(1, index)
        padding[:, :1] = False
        return index, padding

    def forward(self,
                query: Tensor,
                query_pos: Tensor,
                key_padding_mask: Optional[Tensor],
                spatial_shapes: Tensor,
                level_start_index: Tensor,
                valid_ratios: Tensor,
                selection: Dict,
                fg_logits: Tensor,
                cls_branch: Optional[Callable] = None,
                **kwargs) -> Tensor:
        """Args:
            query (Tensor): (bs, N, C) the encoder input X (no position).
            query_pos (Tensor): (bs, N, C) position + level embedding.
            key_padding_mask (Tensor, optional): (bs, N), True = padded.
            spatial_shapes, level_start_index, valid_ratios: as in mmdet's
                ``DeformableDetrTransformerEncoder``.
            selection (dict): output of
                :meth:`ForegroundTokenSelector.select`.
            fg_logits (Tensor): (bs, N) foreground logits.
            cls_branch (Callable, optional): the shared encoder class head
                (used, not owned: it is not registered here).

        Returns:
            Tensor: (bs, N, C) memory; unselected tokens equal ``query``.
        """
        sizes, updates = selection['sizes'], selection['updates']
        if len(sizes) != self.num_layers:
            raise ValueError(
                f'FocusEncoder has {self.num_layers} layers but the selector '
                f'cascade has {len(sizes)} entries')
        ref = self.get_encoder_reference_points(
            spatial_shapes, valid_ratios, device=query.device)
        bs, n, num_levels, _ = ref.shape
        ref = ref.flatten(2)
        fg_logits = fg_logits.detach()
        feat, out = query, query
        for layer, k, upd in zip(self.layers, sizes, updates):
            index = selection['indices'][:, :k]
            q = gather_tokens(out, index)
            fine_index, fine_padding = (None, None)
            if self.num_fine_tokens > 0:
                fine_index, fine_padding = self.fine_tokens(
                    q, gather_tokens(fg_logits, index), upd, cls_branch)
            new = layer(
                query=q,
                query_pos=gather_tokens(query_pos, index),
                value=feat if self.value_source == 'backbone' else out,
                value_padding_mask=key_padding_mask,
                reference_points=gather_tokens(ref, index).view(
                    bs, k, num_levels, 2),
                spatial_shapes=spatial_shapes,
                level_start_index=level_start_index,
                fine_index=fine_index,
                fine_padding_mask=fine_padding,
                **kwargs)
            out = scatter_tokens(out, index,
                                 torch.where(upd.unsqueeze(-1), new, q))
        return out
