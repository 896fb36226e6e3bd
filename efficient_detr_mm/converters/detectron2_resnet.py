"""detectron2 ResNet (as in detrex checkpoints) -> mmdet ``ResNet``.

detectron2 names a ResNet ``stem.conv1`` + ``res{2..5}.{block}.conv{k}``
with the norm inside the convolution (``conv1.norm``) and the projection
shortcut as ``shortcut`` (+ ``shortcut.norm``); its ``FrozenBatchNorm2d``
has no ``num_batches_tracked``.  mmdet's ``ResNet`` (``style='pytorch'``,
i.e. detectron2's ``stride_in_1x1=False``) names the same tensors
``conv1``/``bn1``, ``layer{1..4}.{block}.conv{k}``/``bn{k}`` and
``downsample.0``/``downsample.1``.  The map is exact for the bottleneck
(R-50/101/152) and basic-block (R-18/34) layouts alike.
"""
import re
from typing import Mapping

import torch
from torch import Tensor

from .base import ConversionError, StateDictConverter

_BN = ('weight', 'bias', 'running_mean', 'running_var')

#: blocks per stage (res2..res5) -> mmdet depth
_DEPTHS = {
    (2, 2, 2, 2): 18,
    (3, 4, 6, 3): 34,  # basic blocks; 50 has the same counts
    (3, 4, 23, 3): 101,
    (3, 8, 36, 3): 152,
}


def detectron2_resnet_depth(state: Mapping[str, Tensor],
                            prefix: str = 'backbone.') -> int:
    """The depth (18/34/50/101/152) of the detectron2 ResNet stored under
    ``prefix`` in ``state``, from its block counts and block type."""
    rx = re.compile(re.escape(prefix) + r'res([2-5])\.(\d+)\.')
    blocks = {s: set() for s in range(2, 6)}
    for k in state:
        m = rx.match(k)
        if m:
            blocks[int(m.group(1))].add(int(m.group(2)))
    counts = tuple(len(blocks[s]) for s in range(2, 6))
    bottleneck = f'{prefix}res2.0.conv3.weight' in state
    depth = _DEPTHS.get(counts)
    if depth == 34 and bottleneck:
        depth = 50
    if depth is None or (depth >= 50) != bottleneck:
        raise ConversionError(
            f'{prefix}: not a detectron2 ResNet-18/34/50/101/152 (blocks '
            f'per stage {counts}, bottleneck={bottleneck})')
    return depth


def _move_bn(conv: StateDictConverter, src: str, dst: str) -> None:
    for name in _BN:
        conv.move(f'{src}.{name}', f'{dst}.{name}')
    tracked = f'{src}.num_batches_tracked'
    if tracked in conv.src:
        conv.move(tracked, f'{dst}.num_batches_tracked')
    else:  # FrozenBatchNorm2d has none; mmdet's BatchNorm2d needs it
        conv.put(f'{dst}.num_batches_tracked',
                 torch.tensor(0, dtype=torch.long))


def convert_detectron2_resnet(conv: StateDictConverter,
                              src_prefix: str = 'backbone.',
                              dst_prefix: str = 'backbone.') -> int:
    """Move a detectron2 ResNet under ``src_prefix`` to mmdet ``ResNet``
    keys under ``dst_prefix``; returns the depth.  Keys under the prefix
    that are not part of the layout stay unconsumed (and are reported by
    :func:`check_against_model`)."""
    depth = detectron2_resnet_depth(conv.src, src_prefix)
    p, d = src_prefix, dst_prefix
    conv.move(f'{p}stem.conv1.weight', f'{d}conv1.weight')
    _move_bn(conv, f'{p}stem.conv1.norm', f'{d}bn1')
    rx = re.compile(re.escape(p) + r'res([2-5])\.(\d+)\.(conv\d|shortcut)'
                    r'\.weight$')
    for key in conv.keys(re.escape(p) + r'res'):
        m = rx.match(key)
        if m is None:
            continue
        stage, block, name = int(m.group(1)), m.group(2), m.group(3)
        src = f'{p}res{stage}.{block}.{name}'
        dst = f'{d}layer{stage - 1}.{block}.'
        if name == 'shortcut':
            conv.move(f'{src}.weight', dst + 'downsample.0.weight')
            _move_bn(conv, f'{src}.norm', dst + 'downsample.1')
        else:
            k = name[len('conv'):]
            conv.move(f'{src}.weight', f'{dst}conv{k}.weight')
            _move_bn(conv, f'{src}.norm', f'{dst}bn{k}')
    return depth
