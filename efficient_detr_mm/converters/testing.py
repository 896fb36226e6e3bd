"""Deterministic stand-ins for official weights, for converter fixtures.

A faithful official model is often too large to commit (ResNet-50 alone is
~100 MB in fp32).  A fixture then stores only the official key names and
shapes (``spec``) and a seed; the fixture script and the test both rebuild
the same tensors with :func:`official_like_state`, which depends only on
``spec`` (in order) and ``seed``.
"""
import math
from collections import OrderedDict
from typing import Mapping, Sequence

import torch
from torch import Tensor


def official_like_state(spec: Mapping[str, Sequence[int]],
                        seed: int) -> 'OrderedDict[str, Tensor]':
    """Random fp32 tensors of the given names and shapes, reproducible from
    ``seed`` (a ``torch.Generator`` on the CPU, drawn in ``spec`` order).

    Values are chosen so that deep random networks keep finite, non-trivial
    activations: matrices and convolution kernels ~ N(0, 1 / fan_in)
    (fan-in scaling rather than a fixed std of 0.02, so that a deep ResNet's
    features neither vanish nor explode); BN ``running_var`` ~ U[0.5, 1.5],
    ``running_mean`` ~ N(0, 0.1^2); other 1-D ``weight`` (norm scales)
    ~ 1 + N(0, 0.1^2); 1-D ``bias`` ~ N(0, 0.02^2); ``num_batches_tracked``
    0 (int64).

    Args:
        spec (Mapping[str, Sequence[int]]): name -> shape, in the order of
            the official state dict.
        seed (int): generator seed.

    Returns:
        OrderedDict[str, Tensor]: the tensors, in ``spec`` order.
    """
    gen = torch.Generator().manual_seed(int(seed))
    out = OrderedDict()
    for name, shape in spec.items():
        shape = tuple(int(s) for s in shape)
        if name.endswith('num_batches_tracked'):
            out[name] = torch.zeros(shape, dtype=torch.long)
            continue
        if name.endswith('running_var'):
            value = 0.5 + torch.rand(shape, generator=gen)
        elif name.endswith('running_mean'):
            value = 0.1 * torch.randn(shape, generator=gen)
        elif len(shape) >= 2:
            fan_in = math.prod(shape[1:])
            value = torch.randn(shape, generator=gen) / math.sqrt(fan_in)
        elif name.endswith('weight'):
            value = 1.0 + 0.1 * torch.randn(shape, generator=gen)
        else:
            value = 0.02 * torch.randn(shape, generator=gen)
        out[name] = value
    return out
