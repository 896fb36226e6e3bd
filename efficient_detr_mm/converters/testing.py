"""Deterministic stand-in weights for converter fixtures.

A faithful official model (an R-50 backbone, 256-d transformer) is far too
large to commit as a fixture.  Fixtures therefore store the key names and
shapes of the official state dict plus a seed, and the fixture script and
the test both rebuild the same tensors with :func:`official_like_state`.
"""
import math
import re
import zlib
from collections import OrderedDict
from typing import Dict, Mapping, Sequence, Tuple

import torch
from torch import Tensor

#: per-key override: (regular expression searched in the key, mean, std)
Override = Tuple[str, float, float]


def _generator(seed: int, name: str) -> torch.Generator:
    """One generator per tensor, seeded from ``seed`` and the key, so that
    a tensor's values do not depend on the order of the keys."""
    g = torch.Generator()
    g.manual_seed((int(seed) * 1000003 + zlib.crc32(name.encode())) %
                  (2**63 - 1))
    return g


def official_like_state(spec: Mapping[str, Sequence[int]],
                        seed: int,
                        overrides: Sequence[Override] = ()
                        ) -> 'OrderedDict[str, Tensor]':
    """Random fp32 tensors for every ``name -> shape`` of ``spec``.

    Values keep activations finite and informative through a deep network:

    - ``running_var``: uniform in [0.5, 1.5]; ``running_mean``: N(0, 0.02);
      ``num_batches_tracked``: 0 (int64);
    - other 1-D ``weight`` (norm scales): N(1, 0.02); 1-D ``bias``:
      N(0, 0.02);
    - tensors of 2 or more dimensions: N(0, 1 / fan_in) (``fan_in`` = the
      product of all but the first dimension; std 0.0625 for 256 inputs);
    - ``overrides``: the first ``(pattern, mean, std)`` whose pattern is
      found in the key (``re.search``) sets N(mean, std) instead.

    Args:
        spec (Mapping[str, Sequence[int]]): key -> shape, in the order of
            the result.
        seed (int): base seed.
        overrides (Sequence[tuple]): ``(pattern, mean, std)`` rules.

    Returns:
        OrderedDict[str, Tensor]: the state dict.
    """
    rules = [(re.compile(p), float(m), float(s)) for p, m, s in overrides]
    out: 'OrderedDict[str, Tensor]' = OrderedDict()
    for name, shape in spec.items():
        shape = tuple(int(d) for d in shape)
        g = _generator(seed, name)
        if name.endswith('num_batches_tracked'):
            out[name] = torch.zeros(shape, dtype=torch.long)
            continue
        rule = next(((m, s) for rx, m, s in rules if rx.search(name)), None)
        if rule is not None:
            mean, std = rule
            value = torch.randn(shape, generator=g) * std + mean
        elif name.endswith('running_var'):
            value = torch.rand(shape, generator=g) + 0.5
        elif name.endswith('running_mean'):
            value = torch.randn(shape, generator=g) * 0.02
        elif len(shape) >= 2:
            fan_in = math.prod(shape[1:])
            value = torch.randn(shape, generator=g) / math.sqrt(fan_in)
        elif name.endswith('weight'):
            value = 1 + torch.randn(shape, generator=g) * 0.02
        else:
            value = torch.randn(shape, generator=g) * 0.02
        out[name] = value
    return out


def state_spec(state: Mapping[str, Tensor]) -> Dict[str, Tuple[int, ...]]:
    """``name -> shape`` of a state dict (what a fixture stores instead of
    the tensors)."""
    return OrderedDict((k, tuple(v.shape)) for k, v in state.items())


def random_input(shape: Sequence[int], seed: int) -> Tensor:
    """A normalised-image-like N(0, 1) tensor of ``shape`` from ``seed``."""
    return torch.randn(
        tuple(int(d) for d in shape), generator=_generator(seed, 'input'))


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


__all__ = [
    'official_like_state', 'state_spec', 'random_input', 'alias_groups',
    'expand_aliases'
]
