"""E2LSH hashing and adaptive clustering of ACT, in pure PyTorch.

This re-implements, vectorised, what the release of the Adaptive Clustering
Transformer does with its CUDA extensions (``ada_cluster``, ``weighted_sum``,
``broadcast``); see ``smca_act.md`` B2-B6.  Rows are ``batch x head``; every
function works on all rows at once (no Python loop over tokens or batch).
"""
from typing import Optional, Tuple, Union

import torch
from torch import Tensor

HASH_COMBINES = ('packed', 'exact')


def sample_projections(dims: int,
                       num_hashes: int,
                       offset_range: float = 1.0,
                       generator: Optional[torch.Generator] = None,
                       device: Union[str, torch.device] = 'cpu'
                       ) -> Tuple[Tensor, Tensor]:
    """Draw the E2LSH projections of one call.

    Args:
        dims (int): feature size hashed.
        num_hashes (int): rounds L.
        offset_range (float): offsets are drawn from U[0, offset_range);
            1.0 is the release (then divided by the bucket width), the
            textbook E2LSH uses the bucket width itself.
        generator (torch.Generator, optional): RNG; ``None`` uses the global
            one (the release's behaviour).
        device: device of the result.

    Returns:
        tuple[Tensor, Tensor]: ``proj`` (dims, L) ~ N(0, 1) and ``offset``
        (L,) ~ U[0, offset_range), both fp32.
    """
    proj = torch.randn((dims, num_hashes),
                       generator=generator,
                       device=device,
                       dtype=torch.float32)
    offset = torch.rand((num_hashes, ),
                        generator=generator,
                        device=device,
                        dtype=torch.float32) * offset_range
    return proj, offset


@torch.no_grad()
def e2lsh_codes(x: Tensor,
                proj: Tensor,
                offset: Tensor,
                bucket_width: float,
                pad_mask: Optional[Tensor] = None) -> Tensor:
    """Per-round E2LSH codes ``floor((a_l . x + b_l) / r)``, min-shifted.

    Args:
        x (Tensor): (rows, n, d) features (cast to fp32: hashing never runs
            in half precision).
        proj (Tensor): (d, L) Gaussian projections.
        offset (Tensor): (L,) offsets.
        bucket_width (float): r.
        pad_mask (Tensor, optional): (rows, n) bool, True = padded; padded
            tokens are left out of the minimum (``None``: all tokens count,
            the release's behaviour).

    Returns:
        Tensor: (rows, n, L) int64 codes, shifted so that the minimum over
        the ``n`` tokens of each (row, round) is 0 (as the release does).
    """
    vals = (x.float() @ proj.float() + offset.float()) / bucket_width
    codes = torch.floor(vals).long()
    ref = codes
    if pad_mask is not None:
        ref = codes.masked_fill(pad_mask[..., None],
                                torch.iinfo(torch.long).max)
    return codes - ref.min(dim=1, keepdim=True)[0]


@torch.no_grad()
def pack_codes(codes: Tensor, bits_per_round: int = 2) -> Tensor:
    """The release's combination ``H = sum_l code_l << (bits * l)``.

    Codes wider than ``bits_per_round`` spill into the next round's bits (a
    possible collision) and the sum wraps in int64, exactly as in the release.

    Args:
        codes (Tensor): (rows, n, L) int64 codes.
        bits_per_round (int): shift between rounds (2 in the release).

    Returns:
        Tensor: (rows, n) int64 hashes.
    """
    # ``code << s`` as ``code * 2**s`` (both wrap modulo 2**64): a product
    # exports to any ONNX runtime, a shift of int64 does not (ONNX
    # BitShift takes unsigned types only); 2**63 is stored as -2**63
    mults = [((1 << (bits_per_round * r)) + 2**63) % 2**64 - 2**63
             for r in range(codes.shape[-1])]
    mults = torch.tensor(mults, dtype=torch.long, device=codes.device)
    terms = codes * mults
    # summed by explicit int64 additions, not a reduction: ONNX Runtime's
    # int64 ReduceSum is inexact once the terms pass 2**53 (L = 32 rounds
    # reach 2**62), which changed every exported hash
    packed = terms[..., 0]
    for r in range(1, terms.shape[-1]):
        packed = packed + terms[..., r]
    return packed


@torch.no_grad()
def cluster_ids(hashes: Tensor,
                pad_mask: Optional[Tensor] = None
                ) -> Tuple[Tensor, Tensor]:
    """Adaptive clusters: one cluster per distinct hash value of a row.

    Cluster ids are ``0..K_row-1`` in ascending hash order (the semantics of
    the release's ``ada_cluster`` kernel), computed with sort, diff, cumsum
    and scatter; the number of clusters never becomes a Python int, so an
    exported (ONNX) graph keeps it data-dependent.
    ``hashes`` may also be a (rows, n, L) tensor of codes: then
    clusters are the distinct code tuples (ordered lexicographically, last
    round most significant), i.e. the ``exact`` combination.

    Args:
        hashes (Tensor): (rows, n) int64 hashes or (rows, n, L) codes.
        pad_mask (Tensor, optional): (rows, n) bool, True = padded token.
            When given, padded tokens get a sentinel hash: they never share a
            cluster with valid ones and form one extra cluster placed after
            every valid one.

    Returns:
        tuple[Tensor, Tensor]: ``groups`` (rows, n) int64 cluster id of each
        token, and ``counts`` (rows, K_max) int64 members per cluster, where
        ``K_max`` is the largest number of clusters over the rows (rows with
        fewer clusters have trailing zero counts).
    """
    rows, n = hashes.shape[:2]
    keys = hashes if hashes.dim() == 3 else hashes[..., None]
    if pad_mask is not None:
        pad = pad_mask[..., None]
        keys = torch.cat([keys.masked_fill(pad, 0), pad.long()], dim=-1)
    # lexicographic dense rank, least significant column first: the rank of
    # the columns so far is refined by each next column (rank < n, so
    # ``rank_col * n + rank`` neither overflows nor needs a stable sort)
    groups = _dense_rank(keys[..., 0])
    for col in range(1, keys.shape[-1]):
        groups = _dense_rank(_dense_rank(keys[..., col]) * n + groups)
    # members per id; ids are 0..K_row-1, so the columns up to the largest
    # K of the rows are exactly the non-empty ones (a data-dependent width,
    # an ONNX NonZero when exported)
    counts = torch.zeros_like(groups).scatter_add_(1, groups,
                                                   torch.ones_like(groups))
    counts = counts[:, counts.amax(dim=0) > 0]
    return groups, counts


def _dense_rank(keys: Tensor) -> Tensor:
    """(rows, n) int64 -> id of each entry's value among the distinct
    values of its row, 0 for the smallest (ties share an id; any sort,
    stable or not, gives the same ids)."""
    sorted_keys, perm = torch.sort(keys, dim=1)
    new = sorted_keys[:, 1:] != sorted_keys[:, :-1]
    new = torch.cat([new.new_zeros(keys.shape[0], 1), new], dim=1)
    return torch.empty_like(keys).scatter_(1, perm, new.long().cumsum(dim=1))


def cluster_means(x: Tensor, groups: Tensor, counts: Tensor) -> Tensor:
    """Mean of the members of each cluster (ACT's prototypes).

    ``scatter_add`` and a division: autograd gives exactly the release's
    backward (``dx_n = dP_c(n) / count_c(n)``).  Empty slots stay zero.

    Args:
        x (Tensor): (rows, n, d).
        groups (Tensor): (rows, n) cluster ids.
        counts (Tensor): (rows, K) members per cluster.

    Returns:
        Tensor: (rows, K, d) prototypes, in the dtype of ``x``.
    """
    rows, n, d = x.shape
    sums = x.new_zeros(rows, counts.shape[1], d).scatter_add(
        1, groups[..., None].expand(rows, n, d), x)
    return sums / counts.clamp(min=1)[..., None].to(x.dtype)


def broadcast(y: Tensor, groups: Tensor) -> Tensor:
    """Copy every cluster's row back to its members (a gather; its backward
    sums over the members).

    Args:
        y (Tensor): (rows, K, d).
        groups (Tensor): (rows, n).

    Returns:
        Tensor: (rows, n, d).
    """
    rows, n = groups.shape
    return y.gather(1, groups[..., None].expand(rows, n, y.shape[-1]))
