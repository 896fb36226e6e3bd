"""Padding-mask helpers.  mmdet passes ``key_padding_mask=None`` when every
image of the batch has the batch input shape; these helpers turn that into
explicit tensors where code needs one."""
from typing import Optional

import torch
from torch import Tensor


def valid_mask(key_padding_mask: Optional[Tensor], bs: int, n: int,
               device: torch.device) -> Tensor:
    """(bs, n) bool, True = a real (not padded) token."""
    if key_padding_mask is None:
        return torch.ones(bs, n, dtype=torch.bool, device=device)
    return ~key_padding_mask.bool()


def num_valid(key_padding_mask: Optional[Tensor], bs: int, n: int,
              device: torch.device) -> Tensor:
    """(bs,) long: number of real tokens per image."""
    return valid_mask(key_padding_mask, bs, n, device).sum(dim=1)
