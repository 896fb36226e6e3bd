"""ACT: adaptive clustering attention, a drop-in for mmcv's
``MultiheadAttention``.

Zheng et al., "End-to-End Object Detection with Adaptive Clustering
Transformer", BMVC 2021.  Queries of each head are hashed with L rounds of
E2LSH; tokens with equal hashes form one cluster; the cluster means
(prototypes) attend to all keys and each token receives its prototype's
output.  No parameter is added: ``attn.in_proj_weight``, ``attn.in_proj_bias``
and ``attn.out_proj.*`` are mmcv's, so a DETR checkpoint loads unchanged.
"""
import contextlib
from typing import Dict, Iterator, List, Optional, Union

import torch
import torch.nn.functional as F
from mmcv.cnn.bricks.transformer import MultiheadAttention
from mmdet.registry import MODELS
from torch import Tensor, nn

from ..common.attention import attention_weights, merge_heads, split_heads
from .clustering import (HASH_COMBINES, broadcast, cluster_ids, cluster_means,
                         e2lsh_codes, pack_codes, sample_projections)


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ValueError(f'ACTAttention: {msg}')


@MODELS.register_module()
class ACTAttention(MultiheadAttention):
    """mmcv ``MultiheadAttention`` with ACT's adaptive query clustering.

    Defaults follow the official release (``smca_act.md`` B2-B7) except that
    ``num_hashes`` is honoured (the release always hashes 32 rounds).

    Args:
        embed_dims (int): total width.
        num_heads (int): heads.
        attn_drop (float): dropout on the (prototype) attention weights.
        proj_drop (float): dropout after the output projection.
        dropout_layer (dict): mmcv's shortcut dropout.
        init_cfg (dict, optional): mmcv init config.
        batch_first (bool): layout of inputs / outputs.
        num_hashes (int): E2LSH rounds L for the queries (paper: 16-32).
            Defaults to 32.
        bucket_width (float): E2LSH bucket width r. Defaults to 8.0.
        offset_range (float | str): offsets ~ U[0, offset_range); ``1.0`` is
            the release, ``'r'`` the textbook U[0, bucket_width).
        bits_per_round (int): shift between rounds of the ``packed``
            combination. Defaults to 2 (the release).
        hash_combine (str): ``'packed'`` (release: sum of codes shifted by
            ``bits_per_round * l``, which may collide) or ``'exact'``
            (clusters = distinct code tuples).
        group_q (bool): cluster the queries. Defaults to True.
        group_k (bool): also cluster keys / values (never used for reported
            numbers). Defaults to False.
        k_hashes (int): rounds for the keys when ``group_k``. Defaults to 8.
        enabled (bool): ``False`` runs mmcv's exact attention (MTKD's
            teacher). Defaults to True.
        seed (int, optional): when set, every call draws its projections
            from a generator seeded with ``seed`` (a fixed hash; evaluations
            are reproducible and independent of batch order).  ``None`` uses
            the global RNG, fresh projections per call (the release).
        cluster_padding (bool): ``True`` hashes padded query tokens like real
            ones (the release; they may share clusters with real tokens);
            ``False`` gives them a sentinel cluster of their own.
    """

    def __init__(self,
                 embed_dims: int,
                 num_heads: int,
                 attn_drop: float = 0.,
                 proj_drop: float = 0.,
                 dropout_layer: Optional[dict] = dict(
                     type='Dropout', drop_prob=0.),
                 init_cfg: Optional[dict] = None,
                 batch_first: bool = False,
                 num_hashes: int = 32,
                 bucket_width: float = 8.0,
                 offset_range: Union[float, str] = 1.0,
                 bits_per_round: int = 2,
                 hash_combine: str = 'packed',
                 group_q: bool = True,
                 group_k: bool = False,
                 k_hashes: int = 8,
                 enabled: bool = True,
                 seed: Optional[int] = None,
                 cluster_padding: bool = True,
                 **kwargs) -> None:
        super().__init__(embed_dims, num_heads, attn_drop, proj_drop,
                         dropout_layer, init_cfg, batch_first, **kwargs)
        _check(
            isinstance(num_hashes, int) and num_hashes >= 1,
            f'num_hashes must be an int >= 1, got {num_hashes!r}')
        _check(
            isinstance(k_hashes, int) and k_hashes >= 1,
            f'k_hashes must be an int >= 1, got {k_hashes!r}')
        _check(bucket_width > 0,
               f'bucket_width must be > 0, got {bucket_width!r}')
        _check(
            offset_range == 'r' or (isinstance(offset_range, (int, float))
                                    and offset_range > 0),
            f"offset_range must be a float > 0 or 'r', got {offset_range!r}")
        _check(hash_combine in HASH_COMBINES,
               f'hash_combine must be one of {HASH_COMBINES}, '
               f'got {hash_combine!r}')
        _check(
            isinstance(bits_per_round, int) and bits_per_round >= 1,
            f'bits_per_round must be an int >= 1, got {bits_per_round!r}')
        if hash_combine == 'packed':
            for name, rounds in (('num_hashes', num_hashes), ('k_hashes',
                                                              k_hashes)):
                _check(
                    bits_per_round * (rounds - 1) < 64,
                    f'{name}={rounds} with bits_per_round={bits_per_round} '
                    "shifts past int64; use hash_combine='exact'")
        _check(self.attn._qkv_same_embed_dim,
               'kdim / vdim different from embed_dims are not supported')
        self.num_hashes = num_hashes
        self.bucket_width = float(bucket_width)
        self.offset_range = offset_range
        self.bits_per_round = bits_per_round
        self.hash_combine = hash_combine
        self.group_q = group_q
        self.group_k = group_k
        self.k_hashes = k_hashes
        self.enabled = enabled
        self.seed = seed
        self.cluster_padding = cluster_padding
        #: runtime switch (not a config key): keep the cluster id of every
        #: token of the last call in ``last_groups`` (bs, heads, n), for
        #: visualisation
        self.keep_groups = False
        self.last_groups: Optional[Tensor] = None
        self.reset_stats()

    # ------------------------------------------------------------------
    # statistics (number of prototypes) for FLOP counting and logging
    def reset_stats(self) -> None:
        """Forget the recorded prototype counts."""
        #: (bs, heads) prototypes of the last ACT call, None if none yet
        self.last_num_prototypes: Optional[Tensor] = None
        #: (bs, heads) key clusters of the last call (``group_k`` only)
        self.last_num_key_clusters: Optional[Tensor] = None
        #: query tokens / keys per image of the last call
        self.last_num_tokens = 0
        self.last_num_keys = 0
        # running sums over calls: sum of K, sum of N (over images x heads)
        self._proto_sum = 0.
        self._token_sum = 0.
        self.num_calls = 0

    def prototype_fraction(self) -> float:
        """Mean number of prototypes per head as a fraction of the query
        tokens, over every ACT call since :meth:`reset_stats` (nan if
        none)."""
        if self._token_sum == 0:
            return float('nan')
        return float(self._proto_sum) / float(self._token_sum)

    def _record(self, num_q: Tensor, n: int, nk: int,
                num_k: Optional[Tensor]) -> None:
        self.last_num_prototypes = num_q
        self.last_num_key_clusters = num_k
        self.last_num_tokens = n
        self.last_num_keys = nk
        self._proto_sum = self._proto_sum + num_q.sum().detach()
        self._token_sum += num_q.numel() * n
        self.num_calls += 1

    @property
    def active(self) -> bool:
        """Whether the next call clusters (else it is mmcv's attention)."""
        return self.enabled and (self.group_q or self.group_k)

    # ------------------------------------------------------------------
    def _generator(self, device: torch.device) -> Optional[torch.Generator]:
        if self.seed is None:
            return None
        return torch.Generator(device=device).manual_seed(int(self.seed))

    def _offset_range(self) -> float:
        return (self.bucket_width
                if self.offset_range == 'r' else float(self.offset_range))

    def fix_hash_projections(self, seed: Optional[int] = None) -> None:
        """Draw the E2LSH projections once and keep them as buffers.

        With a seed every call draws the same projections anyway (keys'
        first, then queries', from a generator seeded with ``seed``); this
        draws exactly those once and stores them as non-persistent buffers
        (``hash_proj_q`` / ``hash_offset_q``, and ``_k`` with
        ``group_k``), so that a traced / exported graph holds them as
        constants instead of random-number operators.  The state dict is
        unchanged.

        Args:
            seed (int, optional): sets :attr:`seed` first; required when the
                module has none.
        """
        if seed is not None:
            self.seed = int(seed)
        _check(self.seed is not None,
               'fix_hash_projections needs a seed (the module has seed=None)')
        device = self.attn.in_proj_weight.device
        gen = self._generator(device)
        dims = self.embed_dims // self.num_heads
        for role, rounds, used in (('k', self.k_hashes, self.group_k),
                                   ('q', self.num_hashes, self.group_q)):
            if not used:
                continue
            proj, offset = sample_projections(dims, rounds,
                                              self._offset_range(), gen,
                                              device)
            self.register_buffer(f'hash_proj_{role}', proj, persistent=False)
            self.register_buffer(
                f'hash_offset_{role}', offset, persistent=False)

    def _cluster(self,
                 x: Tensor,
                 rounds: int,
                 pad: Optional[Tensor],
                 gen: Optional[torch.Generator],
                 role: str = 'q'):
        """Hash ``x`` (rows, n, d) and cluster it; fp32 and no grad.
        ``role`` ('q' / 'k') picks the fixed projections, if any."""
        proj = getattr(self, f'hash_proj_{role}', None)
        if proj is not None:
            offset = getattr(self, f'hash_offset_{role}')
        else:
            proj, offset = sample_projections(x.shape[-1], rounds,
                                              self._offset_range(), gen,
                                              x.device)
        with torch.no_grad():
            codes = e2lsh_codes(x.detach(), proj, offset, self.bucket_width,
                                pad)
            hashes = (
                pack_codes(codes, self.bits_per_round)
                if self.hash_combine == 'packed' else codes)
            return cluster_ids(hashes, pad)

    def forward(self,
                query: Tensor,
                key: Optional[Tensor] = None,
                value: Optional[Tensor] = None,
                identity: Optional[Tensor] = None,
                query_pos: Optional[Tensor] = None,
                key_pos: Optional[Tensor] = None,
                attn_mask: Optional[Tensor] = None,
                key_padding_mask: Optional[Tensor] = None,
                **kwargs) -> Tensor:
        """Same signature and output as mmcv's ``MultiheadAttention``.

        Returns:
            Tensor: ``identity + dropout(out_proj(attention))``, in the
            layout of ``query``.
        """
        if not self.active:
            return super().forward(query, key, value, identity, query_pos,
                                   key_pos, attn_mask, key_padding_mask,
                                   **kwargs)
        if attn_mask is not None:
            raise ValueError('ACTAttention: attn_mask is not supported with '
                             'clustering (enabled=True)')
        self_attention = key is None or key is query
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
        if not self.batch_first:
            query, key, value = (t.transpose(0, 1)
                                 for t in (query, key, value))
        out = self._act_attention(query, key, value, key_padding_mask,
                                  self_attention)
        if not self.batch_first:
            out = out.transpose(0, 1)
        return identity + self.dropout_layer(self.proj_drop(out))

    def _act_attention(self, query: Tensor, key: Tensor, value: Tensor,
                       key_padding_mask: Optional[Tensor],
                       self_attention: bool) -> Tensor:
        """Clustered attention on batch-first (bs, n, C) inputs, before the
        shortcut."""
        mha = self.attn
        c, h = self.embed_dims, self.num_heads
        w, b = mha.in_proj_weight, mha.in_proj_bias
        bq, bk, bv = (None, None, None) if b is None else b.split(c)
        wq, wk, wv = w.split(c)
        q = split_heads(F.linear(query, wq, bq), h)  # (bs, h, n, d)
        k = split_heads(F.linear(key, wk, bk), h)
        v = split_heads(F.linear(value, wv, bv), h)
        bs, _, n, d = q.shape
        nk = k.shape[2]
        q = q * d**-0.5
        kpm = None if key_padding_mask is None else key_padding_mask.bool()
        query_pad = kpm if self_attention else None
        gen = self._generator(q.device)

        attn_bias = None
        num_k = None
        if self.group_k:
            # keys / values -> their cluster means; padded keys go to a
            # sentinel cluster that gets zero weight (never a key)
            kpad = (None if kpm is None else kpm[:, None].expand(
                bs, h, nk).reshape(bs * h, nk))
            k_groups, k_counts = self._cluster(
                k.reshape(bs * h, nk, d), self.k_hashes, kpad, gen, role='k')
            k = cluster_means(k.reshape(bs * h, nk, d).float(), k_groups,
                              k_counts).to(k.dtype).view(bs, h, -1, d)
            v = cluster_means(v.reshape(bs * h, nk, d).float(), k_groups,
                              k_counts).to(v.dtype).view(bs, h, -1, d)
            weight = k_counts.float()
            if kpad is not None:
                valid = torch.zeros_like(weight).scatter_add_(
                    1, k_groups, (~kpad).float())
                weight = valid
            num_k = (k_counts > 0).sum(-1).view(bs, h)
            # softmax(s) * count, renormalised == softmax(s + log count)
            attn_bias = weight.log().view(bs, h, 1, -1)
            kpm = None

        if self.group_q:
            qpad = None
            if not self.cluster_padding and query_pad is not None:
                qpad = query_pad[:, None].expand(bs, h, n).reshape(bs * h, n)
            groups, counts = self._cluster(q.reshape(bs * h, n, d),
                                           self.num_hashes, qpad, gen)
            # means in fp32 (the release's kernels are fp32-only)
            protos = cluster_means(q.reshape(bs * h, n, d).float(), groups,
                                   counts).view(bs, h, -1, d)
            num_q = (counts > 0).sum(-1).view(bs, h)
            if self.keep_groups:
                self.last_groups = groups.view(bs, h, n)
        else:
            protos = q
            num_q = torch.full((bs, h), n, device=q.device)

        attn = attention_weights(
            protos, k, key_padding_mask=kpm, attn_bias=attn_bias, scale=1.0)
        attn = F.dropout(attn, p=mha.dropout, training=self.training)
        out = torch.matmul(attn.to(v.dtype), v)  # (bs, h, K, d)
        if self.group_q:
            out = broadcast(out.reshape(bs * h, -1, d),
                            groups).view(bs, h, n, d)
        self._record(num_q.detach(), n, nk, num_k)
        out = merge_heads(out)
        return F.linear(out, mha.out_proj.weight, mha.out_proj.bias)

    # ------------------------------------------------------------------
    def flop_count(self, args: tuple, kwargs: dict, output) -> int:
        """Multiply-adds of the last call (FLOP-counting protocol).

        Counts the in / out projections and, with clustering, the hashing
        (``N d_h L`` per head), the prototype means (``N d_h``), and the
        prototype attention ``2 K N_k d_h`` with the **actual** number of
        prototypes K of each image and head in that call (the broadcast is a
        copy, the softmax is not counted, as in fvcore).  With
        ``enabled=False`` it is dense attention, ``2 N N_k d_h`` per head.

        Returns:
            int: multiply-adds.
        """
        query = args[0] if args else kwargs['query']
        key = args[1] if len(args) > 1 else kwargs.get('key')
        key = query if key is None else key
        tok_dim = 1 if self.batch_first else 0
        bat_dim = 1 - tok_dim
        bs, n = query.shape[bat_dim], query.shape[tok_dim]
        nk = key.shape[tok_dim]
        c, h = self.embed_dims, self.num_heads
        d = c // h
        proj = bs * (n + 2 * nk) * c * c + bs * n * c * c
        if not self.active:
            return int(proj + bs * h * 2 * n * nk * d)
        flops = proj
        protos = self.last_num_prototypes.double()  # (bs, h)
        keys = (
            self.last_num_key_clusters.double()
            if self.group_k else torch.full_like(protos, nk))
        if self.group_k:
            flops += bs * h * nk * d * (self.k_hashes + 2)
        if self.group_q:
            flops += bs * h * n * d * (self.num_hashes + 1)
        # every (prototype, key) pair of each image and head: QK^T and AV
        flops += 2 * d * int((protos * keys).sum().item())
        return int(flops)


def act_modules(model: nn.Module) -> List[ACTAttention]:
    """Every :class:`ACTAttention` of ``model``, in module order."""
    return [m for m in model.modules() if isinstance(m, ACTAttention)]


@contextlib.contextmanager
def act_enabled(model: nn.Module, enabled: bool) -> Iterator[None]:
    """Temporarily switch ACT on / off in every ACT attention of ``model``
    (the MTKD teacher runs with ``enabled=False``)."""
    mods = act_modules(model)
    before = [m.enabled for m in mods]
    for m in mods:
        m.enabled = enabled
    try:
        yield
    finally:
        for m, e in zip(mods, before):
            m.enabled = e


def prototype_stats(model: nn.Module) -> Dict[str, float]:
    """Mean prototypes per head as a fraction of tokens, per ACT layer,
    since the last :meth:`ACTAttention.reset_stats` (``layer{i}`` keys)."""
    return {
        f'layer{i}': m.prototype_fraction()
        for i, m in enumerate(act_modules(model))
    }
