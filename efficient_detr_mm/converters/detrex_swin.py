"""detrex / detectron2 ``SwinTransformer`` -> mmdet ``SwinTransformer``.

detrex's Swin configs build detectron2's ``SwinTransformer``
(``detectron2/modeling/backbone/swin.py``, the layout of the original
Swin-Transformer-Object-Detection code): ``patch_embed.proj``,
``layers.{i}.blocks.{j}.{norm1,attn.*,norm2,mlp.fc1,mlp.fc2}``,
``layers.{i}.downsample.{reduction,norm}`` and one output norm per output
stage, ``norm{i}``.  mmdet names them ``patch_embed.projection``,
``stages.{i}.blocks.{j}.{norm1,attn.w_msa.*,norm2,ffn.layers.0.0,
ffn.layers.1}``, ``stages.{i}.downsample.*`` and ``norm{i}``.

Patch merging concatenates the four 2x2 neighbours in the order
(0,0), (1,0), (0,1), (1,1) x channels; mmdet's ``nn.Unfold`` gives
channels x (0,0), (0,1), (1,0), (1,1): the reduction's input columns and
the merge norm are permuted accordingly.
"""
import re

import torch
from torch import Tensor

from .base import StateDictConverter

_BLOCK = [
    ('norm1.', 'norm1.'),
    ('attn.', 'attn.w_msa.'),
    ('norm2.', 'norm2.'),
    ('mlp.fc1.', 'ffn.layers.0.0.'),
    ('mlp.fc2.', 'ffn.layers.1.'),
]


def _unfold_index(channels4: int) -> Tensor:
    """Index ``idx`` with ``mmdet[..., c * 4 + k] = swin[..., idx]``."""
    c = channels4 // 4
    neighbour = torch.tensor([0, 2, 1, 3])  # unfold position k -> concat j
    return (neighbour[None, :] * c +
            torch.arange(c)[:, None]).reshape(-1)


def merge_reduction_to_mmdet(weight: Tensor) -> Tensor:
    """Patch-merging ``reduction.weight`` (out, 4C): original -> mmdet."""
    return weight[:, _unfold_index(weight.shape[1])]


def merge_norm_to_mmdet(value: Tensor) -> Tensor:
    """Patch-merging ``norm.weight`` / ``norm.bias`` (4C,): original ->
    mmdet."""
    return value[_unfold_index(value.shape[0])]


def convert_detrex_swin(conv: StateDictConverter,
                        src_prefix: str = 'backbone.',
                        dst_prefix: str = 'backbone.') -> int:
    """Move a detrex / detectron2 Swin Transformer under ``src_prefix`` to
    mmdet ``SwinTransformer`` keys under ``dst_prefix``; returns the number
    of stages.  Unknown keys stay unconsumed (reported later)."""
    p, d = src_prefix, dst_prefix
    conv.move_prefix(f'{p}patch_embed.proj.', f'{d}patch_embed.projection.')
    conv.move_prefix(f'{p}patch_embed.norm.', f'{d}patch_embed.norm.')
    ape = f'{p}absolute_pos_embed'
    if ape in conv.src:  # (1, C, h, w) -> (1, h * w, C)
        conv.move(ape, f'{d}absolute_pos_embed',
                  lambda t: t.flatten(2).transpose(1, 2).contiguous())
    rx = re.compile(re.escape(p) + r'layers\.(\d+)\.')
    stages = sorted({int(rx.match(k).group(1)) for k in conv.keys(rx.pattern)})
    for i in stages:
        src, dst = f'{p}layers.{i}.', f'{d}stages.{i}.'
        blocks = sorted({
            int(k[len(src) + len('blocks.'):].split('.')[0])
            for k in conv.keys(re.escape(src + 'blocks.'))
        })
        for j in blocks:
            for a, b in _BLOCK:
                conv.move_prefix(f'{src}blocks.{j}.{a}',
                                 f'{dst}blocks.{j}.{b}')
        red = f'{src}downsample.reduction.weight'
        if red in conv.src:
            conv.move(red, f'{dst}downsample.reduction.weight',
                      merge_reduction_to_mmdet)
            for name in ('weight', 'bias'):
                conv.move(f'{src}downsample.norm.{name}',
                          f'{dst}downsample.norm.{name}', merge_norm_to_mmdet)
    for key in conv.keys(re.escape(p) + r'norm\d+\.'):
        conv.move(key, d + key[len(p):])
    return len(stages)
