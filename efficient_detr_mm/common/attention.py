"""Scaled dot-product attention pieces shared by the papers' attentions.

All functions take batch-first, head-split tensors ``(bs, heads, n, dim)``
and keep the softmax in fp32 under AMP (engineering rule), returning the
input dtype.
"""
from typing import Optional

import torch
from torch import Tensor


def split_heads(x: Tensor, num_heads: int) -> Tensor:
    """(bs, n, C) -> (bs, heads, n, C // heads)."""
    bs, n, c = x.shape
    return x.view(bs, n, num_heads, c // num_heads).transpose(1, 2)


def merge_heads(x: Tensor) -> Tensor:
    """(bs, heads, n, d) -> (bs, n, heads * d)."""
    bs, h, n, d = x.shape
    return x.transpose(1, 2).reshape(bs, n, h * d)


def attention_weights(q: Tensor,
                      k: Tensor,
                      key_padding_mask: Optional[Tensor] = None,
                      attn_bias: Optional[Tensor] = None,
                      scale: Optional[float] = None) -> Tensor:
    """Softmax over keys of ``q k^T * scale + attn_bias``, padded keys
    excluded.

    Args:
        q (Tensor): (bs, heads, nq, d).
        k (Tensor): (bs, heads, nk, d).
        key_padding_mask (Tensor, optional): (bs, nk) bool, True = padded.
            ``None`` means every key is valid.
        attn_bias (Tensor, optional): added to the logits before the softmax,
            broadcastable to (bs, heads, nq, nk) (e.g. SMCA's log G).
        scale (float, optional): defaults to ``d ** -0.5``.

    Returns:
        Tensor: (bs, heads, nq, nk) weights in fp32.
    """
    scale = q.shape[-1]**-0.5 if scale is None else scale
    logits = torch.matmul(q.float(), k.float().transpose(-2, -1)) * scale
    if attn_bias is not None:
        logits = logits + attn_bias.float()
    if key_padding_mask is not None:
        logits = logits.masked_fill(key_padding_mask[:, None, None, :],
                                    float('-inf'))
    return logits.softmax(dim=-1)


def attend(q: Tensor,
           k: Tensor,
           v: Tensor,
           key_padding_mask: Optional[Tensor] = None,
           attn_bias: Optional[Tensor] = None,
           scale: Optional[float] = None) -> Tensor:
    """``attention_weights(q, k, ...) @ v`` in the dtype of ``v``.

    Returns:
        Tensor: (bs, heads, nq, d_v).
    """
    w = attention_weights(q, k, key_padding_mask, attn_bias, scale)
    return torch.matmul(w.to(v.dtype), v)
