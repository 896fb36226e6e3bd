"""Official Lite-DETR checkpoints (IDEA-Research/Lite-DETR, DINO code base)
-> :class:`~efficient_detr_mm.lite_detr.LiteDINO`.

The released R-50 checkpoints and the configs they convert to:

==================  ====================  =================================
file                official options      config (configs/lite_detr/)
==================  ====================  =================================
r50_s2ex3_49.9.pth  enc_scale=2, ex=3     lite-dino-h2l2-3blk_r50_8xb2-36e
r50_s3ex1_50.2.pth  enc_scale=3, ex=1     lite-dino-h3l1-1blk_r50_8xb2-36e
r50_s3ex3_50.4.pth  enc_scale=3, ex=3     lite-dino-h3l1-3blk_r50_8xb2-36e
==================  ====================  =================================

(``enc_scale`` = number of high-level levels, ``ex`` = ``num_expansion`` =
number of blocks.) The config is chosen from the checkpoint's saved
``args`` (``enc_scale``, ``num_expansion``, ``key_aware``); without them,
from the number of encoder layers that carry the small low-level FFN.

Key map (official -> ours):

* ``backbone.0.body.*`` (torchvision ResNet, frozen BN without
  ``num_batches_tracked``) -> ``backbone.*`` (same names; the counters are
  filled with 0);
* ``input_proj.{i}.0/.1`` -> ``neck.convs.{i}.conv/.gn`` for the 1x1
  projections and ``neck.extra_convs.{j}.conv/.gn`` for the 3x3 stride-2
  extra level (conv biases kept: the configs use ``bias=True``);
* encoder layer ``self_attn`` / ``norm1`` / ``linear1,2`` / ``norm2`` /
  ``linear12,22`` / ``norm22`` -> ``self_attn`` / ``norms.0`` / ``ffn`` /
  ``norms.1`` / ``low_ffn`` / ``norms.2``;
* decoder layer ``self_attn`` (``nn.MultiheadAttention``) / ``norm2`` /
  ``cross_attn`` / ``norm1`` / ``linear1,2`` / ``norm3`` -> ``self_attn.attn``
  / ``norms.0`` / ``cross_attn`` / ``norms.1`` / ``ffn`` / ``norms.2``;
* ``class_embed.{i}`` / ``bbox_embed.{i}.layers.{j}`` (one module shared by
  the decoder layers) -> ``bbox_head.cls_branches.{i}`` /
  ``reg_branches.{i}.{2j}``; ``transformer.enc_out_class_embed`` /
  ``enc_out_bbox_embed`` -> the last branch; ``transformer.decoder.
  class_embed`` / ``bbox_embed`` are the same tensors registered twice
  (checked equal, dropped);
* ``transformer.tgt_embed`` / ``enc_output`` / ``enc_output_norm`` /
  ``level_embed`` -> ``query_embedding`` / ``memory_trans_fc`` /
  ``memory_trans_norm`` / ``level_embed``;
* class rows: the classifiers have one row per COCO id (91) and
  ``label_enc`` 92 rows; the 80 rows at the COCO ids are kept, in mmdet's
  class order. The 11 unused ids (and id 0) take part in the official
  top-k over classes; dropping them is exact as long as they never win
  (expected for trained checkpoints; not checked on the released files).
"""
import re
import sys
from typing import Any, Mapping, Optional, Sequence

import torch
from torch import Tensor

from .base import (ConversionError, StateDictConverter, coco_class_rows,
                   convert_main)

#: (enc_scale, num_expansion) of the released checkpoints -> our config
CONFIGS = {
    (2, 3): 'configs/lite_detr/lite-dino-h2l2-3blk_r50_8xb2-36e_coco.py',
    (3, 1): 'configs/lite_detr/lite-dino-h3l1-1blk_r50_8xb2-36e_coco.py',
    (3, 3): 'configs/lite_detr/lite-dino-h3l1-3blk_r50_8xb2-36e_coco.py',
}

#: released checkpoint files -> (enc_scale, num_expansion)
RELEASED = {
    'r50_s2ex3_49.9.pth': (2, 3),
    'r50_s3ex1_50.2.pth': (3, 1),
    'r50_s3ex3_50.4.pth': (3, 3),
}

ENC_LAYER = [('self_attn.', 'self_attn.'), ('norm1.', 'norms.0.'),
             ('linear1.', 'ffn.layers.0.0.'), ('linear2.', 'ffn.layers.1.'),
             ('norm2.', 'norms.1.'), ('linear12.', 'low_ffn.layers.0.0.'),
             ('linear22.', 'low_ffn.layers.1.'), ('norm22.', 'norms.2.')]
DEC_LAYER = [('self_attn.in_proj_', 'self_attn.attn.in_proj_'),
             ('self_attn.out_proj.', 'self_attn.attn.out_proj.'),
             ('norm2.', 'norms.0.'), ('cross_attn.', 'cross_attn.'),
             ('norm1.', 'norms.1.'), ('linear1.', 'ffn.layers.0.0.'),
             ('linear2.', 'ffn.layers.1.'), ('norm3.', 'norms.2.')]
SOURCE = 'IDEA-Research/Lite-DETR (DINO code base) -> LiteDINO'


def _rename(table: Sequence[tuple], rest: str) -> Optional[str]:
    for old, new in table:
        if rest.startswith(old):
            return new + rest[len(old):]
    return None


def _move_layers(conv: StateDictConverter, src_prefix: str,
                 dst_prefix: str, table: Sequence[tuple]) -> None:
    rx = re.compile(re.escape(src_prefix) + r'(\d+)\.(.+)$')
    for key in conv.keys(re.escape(src_prefix)):
        m = rx.match(key)
        new = _rename(table, m.group(2)) if m else None
        if new is not None:  # anything else is reported as not converted
            conv.move(key, f'{dst_prefix}{m.group(1)}.{new}')


def _class_rows(key: str, num_ids: int):

    def take_rows(t: Tensor) -> Tensor:
        if t.shape[0] < num_ids:
            raise ConversionError(
                f'{key}: expected {num_ids} rows (one per COCO id), got '
                f'shape {tuple(t.shape)}')
        return t[coco_class_rows()].clone()

    return take_rows


def _mlp_to_sequential(rest: str) -> str:
    """``{j}.weight`` of the official MLP's ``layers`` -> ``{2j}.weight``
    of mmdet's ``Sequential(Linear, ReLU, Linear, ReLU, Linear)``."""
    index, name = rest.split('.', 1)
    return f'{2 * int(index)}.{name}'


def _layer_ids(conv: StateDictConverter, prefix: str) -> list:
    rx = re.compile(re.escape(prefix) + r'(\d+)\.')
    return sorted({int(rx.match(k).group(1)) for k in conv.keys(
        re.escape(prefix) + r'\d+\.')})


def convert(src: Mapping[str, Tensor]) -> StateDictConverter:
    """Map an official Lite-DINO state dict onto ``LiteDINO``'s names.

    Args:
        src (Mapping[str, Tensor]): the official ``model`` state dict.

    Returns:
        StateDictConverter: the converted keys in ``.out``; what was
        consumed / dropped is recorded for :func:`check_against_model`.
    """
    conv = StateDictConverter(src)

    # backbone: torchvision ResNet, FrozenBatchNorm2d (no counters)
    body = 'backbone.0.body.'
    for key in conv.keys(re.escape(body)):
        rest = key[len(body):]
        conv.move(key, 'backbone.' + rest)
        if rest.endswith('.running_mean'):
            counter = 'backbone.' + rest[:-len('running_mean')] + \
                'num_batches_tracked'
            if body + counter[len('backbone.'):] not in conv.src:
                conv.put(counter, torch.tensor(0, dtype=torch.long))

    # neck: 1x1 projections of C3-C5, then the 3x3 stride-2 extra levels
    n_extra = 0
    for i in _layer_ids(conv, 'input_proj.'):
        conv_w = conv.src[f'input_proj.{i}.0.weight']
        if conv_w.shape[-1] == 1:
            dst = f'neck.convs.{i}.'
        else:
            dst = f'neck.extra_convs.{n_extra}.'
            n_extra += 1
        conv.move_prefix(f'input_proj.{i}.0.', dst + 'conv.')
        conv.move_prefix(f'input_proj.{i}.1.', dst + 'gn.')

    # transformer
    t = 'transformer.'
    _move_layers(conv, t + 'encoder.layers.', 'encoder.layers.', ENC_LAYER)
    _move_layers(conv, t + 'decoder.layers.', 'decoder.layers.', DEC_LAYER)
    conv.move_prefix(t + 'decoder.norm.', 'decoder.norm.')
    conv.move_prefix(t + 'decoder.ref_point_head.',
                     'decoder.ref_point_head.')
    conv.move(t + 'level_embed', 'level_embed')
    conv.move(t + 'tgt_embed.weight', 'query_embedding.weight')
    conv.move_prefix(t + 'enc_output.', 'memory_trans_fc.')
    conv.move_prefix(t + 'enc_output_norm.', 'memory_trans_norm.')

    # heads: one branch per decoder layer, then the encoder-output branch
    num_ids = int(conv.src['label_enc.weight'].shape[0]) - 1
    dec_ids = _layer_ids(conv, 'class_embed.')
    num_dec = len(dec_ids)
    if dec_ids != list(range(num_dec)) or num_dec == 0:
        raise ConversionError(
            f'class_embed.*: expected layers 0..N-1, found {dec_ids}')
    for i in range(num_dec):
        for name in ('weight', 'bias'):
            conv.move(f'class_embed.{i}.{name}',
                      f'bbox_head.cls_branches.{i}.{name}',
                      _class_rows(f'class_embed.{i}.{name}', num_ids))
        conv.move_prefix(f'bbox_embed.{i}.layers.',
                         f'bbox_head.reg_branches.{i}.', _mlp_to_sequential)
    for name in ('weight', 'bias'):
        conv.move(t + f'enc_out_class_embed.{name}',
                  f'bbox_head.cls_branches.{num_dec}.{name}',
                  _class_rows(t + f'enc_out_class_embed.{name}', num_ids))
    conv.move_prefix(t + 'enc_out_bbox_embed.layers.',
                     f'bbox_head.reg_branches.{num_dec}.', _mlp_to_sequential)
    # the decoder's references to the same head modules
    for alias in conv.keys(re.escape(t + 'decoder.') +
                           r'(class_embed|bbox_embed)\.'):
        owner = alias[len(t + 'decoder.'):]
        if owner not in conv.src or not torch.equal(conv.src[alias],
                                                    conv.src[owner]):
            raise ConversionError(
                f'{alias} should be the same tensor as {owner} (the '
                'official decoder holds references to the heads)')
    conv.drop(
        re.escape(t + 'decoder.') + r'(class_embed|bbox_embed)\.',
        'transformer.decoder.class_embed / bbox_embed: the heads again')
    conv.move('label_enc.weight', 'dn_query_generator.label_embedding.weight',
              _class_rows('label_enc.weight', num_ids))
    return conv


def _num_small_ffn_layers(src: Mapping[str, Tensor]) -> int:
    rx = re.compile(r'transformer\.encoder\.layers\.(\d+)\.linear12\.weight$')
    return len([k for k in src if rx.match(k)])


def default_config(src: Mapping[str, Tensor],
                   extras: Optional[Mapping[str, Any]] = None) -> str:
    """The config of a Lite-DINO checkpoint, from its saved ``args``
    (``enc_scale``, ``num_expansion``, ``key_aware``) or, without them, from
    its shapes.

    Raises:
        ConversionError: the checkpoint matches none of the shipped
            configs (name one with ``--config``).
    """
    args = (extras or {}).get('args')
    enc_scale = getattr(args, 'enc_scale', None)
    num_expansion = getattr(args, 'num_expansion', None)
    key_aware = getattr(args, 'key_aware', None)
    if key_aware is None:
        key_aware = not any(k.endswith('.attention_weights.weight')
                            for k in src)
    if not key_aware:
        raise ConversionError(
            'the checkpoint uses plain deformable attention (key_aware='
            'False: attention_weights, no key-aware query_proj); no shipped '
            'config matches: pass --config with a LiteDINO config whose '
            "encoder / decoder attention is 'MultiScaleDeformableAttention'")
    if num_expansion is None:
        num_expansion = _num_small_ffn_layers(src)
    if enc_scale is None:
        if num_expansion != 1:
            raise ConversionError(
                'the checkpoint has no saved args and the number of high-'
                'level levels (enc_scale) cannot be read from its shapes: '
                'pass --config (H2L2: ' + CONFIGS[(2, 3)] + ', H3L1: ' +
                CONFIGS[(3, 3)] + ')')
        enc_scale = 3
    config = CONFIGS.get((int(enc_scale), int(num_expansion)))
    if config is None:
        raise ConversionError(
            f'no shipped config for enc_scale={enc_scale}, num_expansion='
            f'{num_expansion} (released: ' + ', '.join(
                f'{s}/{e}' for s, e in CONFIGS) + '); pass --config')
    return config


def main(argv: Optional[Sequence[str]] = None) -> None:
    """``lite_dino_to_mmdet.py SRC DST [--config CFG]``."""
    try:
        convert_main(
            'Convert an official Lite-DETR (Lite-DINO) checkpoint to a '
            'LiteDINO checkpoint for mmdet',
            convert,
            default_config,
            argv=argv,
            source=SOURCE,
            config_uses_extras=True)
    except ConversionError as err:
        print(f'error: {err}', file=sys.stderr)
        raise SystemExit(1)


__all__ = ['CONFIGS', 'RELEASED', 'convert', 'default_config', 'main']
