"""Deterministic random "official-like" weights for converter fixtures.

A faithful official model with an R-50 backbone is ~100 MB in fp32, too big
to commit as a fixture. Such a fixture stores the official state dict's key
names and shapes plus a seed, and the fixture script and the test both
regenerate the same values with :func:`official_like_state`. Every tensor
has its own generator, seeded from the seed and the key name, so a value
does not depend on the other keys or their order.
"""
import zlib
from collections import OrderedDict
from typing import Dict, Mapping, Sequence

import torch
from torch import Tensor

#: keys whose leaf name ends like this are BatchNorm bookkeeping
_COUNTER = 'num_batches_tracked'


def key_seed(seed: int, name: str) -> int:
    """The generator seed of tensor ``name`` (stable across runs and
    platforms: CRC-32 of the name, not Python's salted ``hash``)."""
    return (int(seed) * 1000003 + zlib.crc32(name.encode('utf-8'))) % (2**63)


def official_like_state(spec: Mapping[str, Sequence[int]],
                        seed: int,
                        std: float = 0.02) -> 'OrderedDict[str, Tensor]':
    """Random fp32 tensors for the key names and shapes of ``spec``.

    * ``*.num_batches_tracked``: 0 (int64);
    * ``*.running_var``: uniform in [0.5, 1.5];
    * 1-d ``*.weight`` (norm scales, frozen-BN weights): 1 + N(0, std);
    * everything else (weights, biases, running means, embeddings):
      N(0, std).

    Args:
        spec (Mapping[str, Sequence[int]]): key name -> shape.
        seed (int): the seed of the whole state.
        std (float): standard deviation of the normal draws.
            Defaults to 0.02.

    Returns:
        OrderedDict[str, Tensor]: the state, in ``spec``'s order.
    """
    out: Dict[str, Tensor] = OrderedDict()
    for name, shape in spec.items():
        shape = tuple(int(s) for s in shape)
        leaf = name.rsplit('.', 1)[-1]
        if leaf == _COUNTER:
            out[name] = torch.zeros(shape, dtype=torch.long)
            continue
        g = torch.Generator().manual_seed(key_seed(seed, name))
        if leaf == 'running_var':
            out[name] = 0.5 + torch.rand(shape, generator=g)
        elif leaf == 'weight' and len(shape) == 1:
            out[name] = 1.0 + std * torch.randn(shape, generator=g)
        else:
            out[name] = std * torch.randn(shape, generator=g)
    return out


def state_spec(state: Mapping[str, Tensor]) -> 'OrderedDict[str, list]':
    """Key name -> shape (as a list) of a state dict."""
    return OrderedDict((k, list(v.shape)) for k, v in state.items())


def alias_groups(state: Mapping[str, Tensor]) -> Dict[str, str]:
    """``{alias: canonical}`` for the keys of ``state`` that are the same
    tensor (a module registered under several names, e.g. a head shared by
    all decoder layers); the canonical key is the first one."""
    first: Dict[tuple, str] = {}
    aliases = {}
    for k, v in state.items():
        if v.numel() == 0:
            continue
        ident = (v.data_ptr(), tuple(v.shape), v.dtype)
        if ident in first:
            aliases[k] = first[ident]
        else:
            first[ident] = k
    return aliases


def expand_aliases(state: Mapping[str, Tensor],
                   aliases: Mapping[str, str],
                   order: Sequence[str] = ()) -> 'OrderedDict[str, Tensor]':
    """``state`` plus ``aliases`` (alias -> canonical key) filled with the
    canonical tensors, in the key order ``order`` when given."""
    full = OrderedDict(state)
    for alias, canon in aliases.items():
        full[alias] = full[canon]
    if order:
        full = OrderedDict((k, full[k]) for k in order)
    return full
