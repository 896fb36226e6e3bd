"""detrex Focus-DETR checkpoints (``projects/focus_detr``) -> ``FocusDETR``.

The detrex model stores each shared head under several names: the
encoder-output class head ``class_embed.{L}`` also as
``enhance_MCSP_layerlist.*`` and ``transformer.encoder.enhance_MCSP.*``,
and every ``class_embed.*`` / ``bbox_embed.*`` also as
``transformer.decoder.class_embed.*`` / ``bbox_embed.*`` (80 aliases for
6 + 6 layers).  They are checked to equal their canonical tensor and then
dropped.  Everything else maps one to one:

=====================================  ==================================
detrex (``t.`` = ``transformer.``)     FocusDETR (mmdet DINO)
=====================================  ==================================
backbone.* (detectron2 ResNet / Swin)  backbone.* (mmdet ResNet / Swin)
neck.convs.i.conv / .norm              neck.convs.i.conv / .gn
neck.extra_convs.0.conv / .norm        neck.extra_convs.0.conv / .gn
t.level_embeds                         level_embed
t.tgt_embed                            query_embedding
t.enc_output / t.enc_output_norm       memory_trans_fc / memory_trans_norm
t.enc_mask_predictor.*                 selector.scorer.*
t.alpha                                selector.alpha
t.encoder.layers.i.attentions.0        encoder.layers.i.oesm_attn
t.encoder.layers.i.norm2               encoder.layers.i.oesm_norm
t.encoder.layers.i.attentions.1        encoder.layers.i.self_attn
t.encoder.layers.i.ffns.0 / norms.k    encoder.layers.i.ffn / norms.k
t.decoder.layers.i.attentions.0 / .1   decoder.layers.i.self_attn / cross_attn
t.decoder.layers.i.ffns.0 / norms.k    decoder.layers.i.ffn / norms.k
t.decoder.ref_point_head / norm        decoder.ref_point_head / norm
class_embed.i                          bbox_head.cls_branches.i
bbox_embed.i.layers.j                  bbox_head.reg_branches.i.(2j)
label_enc                              dn_query_generator.label_embedding
=====================================  ==================================

detrex classifies the 80 COCO classes contiguously, in mmdet's order: no
class rows move.
"""
import argparse
import os.path as osp
import re
from typing import Mapping, Optional, Sequence

import torch
from torch import Tensor

from .archives import checkpoint_in_archive
from .base import ConversionError, StateDictConverter, convert_main
from .detectron2_resnet import convert_detectron2_resnet
from .detrex_swin import convert_detrex_swin

#: alias prefixes of the shared heads -> how to find the canonical key
_ALIASES = (
    (r'enhance_MCSP_layerlist\.\d+\.', 'encoder'),
    (r'transformer\.encoder\.enhance_MCSP\.\d+\.', 'encoder'),
    (r'transformer\.decoder\.(class_embed|bbox_embed)\.', 'decoder'),
)

CONFIG_DIR = 'configs/focus_detr'


def _num_heads(state: Mapping[str, Tensor]) -> int:
    idx = {int(m.group(1)) for m in
           (re.match(r'class_embed\.(\d+)\.', k) for k in state) if m}
    if not idx:
        raise ConversionError('not a detrex Focus-DETR checkpoint: no '
                              'class_embed.* keys')
    return max(idx) + 1


def _drop_aliases(conv: StateDictConverter) -> None:
    enc_head = f'class_embed.{_num_heads(conv.src) - 1}.'
    for pattern, kind in _ALIASES:
        rx = re.compile(pattern)
        for key in conv.keys(pattern):
            m = rx.match(key)
            rest = key[m.end():]
            canon = (enc_head + rest if kind == 'encoder' else
                     key[len('transformer.decoder.'):])
            if canon not in conv.src:
                raise ConversionError(
                    f'{key} is an alias of {canon}, which the checkpoint '
                    'does not have')
            if not torch.equal(conv.src[key], conv.src[canon]):
                raise ConversionError(
                    f'{key} differs from {canon}: the official model shares '
                    'these heads, the checkpoint does not')
        conv.drop(pattern, 'alias of a shared head (same tensor stored '
                  'twice)')


def _move_encoder_layer(conv: StateDictConverter, src: str,
                        dst: str) -> None:
    conv.move_prefix(src + 'attentions.0.', dst + 'oesm_attn.')
    conv.move_prefix(src + 'norm2.', dst + 'oesm_norm.')
    conv.move_prefix(src + 'attentions.1.', dst + 'self_attn.')
    conv.move_prefix(src + 'ffns.0.', dst + 'ffn.')
    conv.move_prefix(src + 'norms.', dst + 'norms.')


def _move_decoder_layer(conv: StateDictConverter, src: str,
                        dst: str) -> None:
    conv.move_prefix(src + 'attentions.0.', dst + 'self_attn.')
    conv.move_prefix(src + 'attentions.1.', dst + 'cross_attn.')
    conv.move_prefix(src + 'ffns.0.', dst + 'ffn.')
    conv.move_prefix(src + 'norms.', dst + 'norms.')


def _layer_ids(conv: StateDictConverter, prefix: str) -> list:
    rx = re.compile(re.escape(prefix) + r'(\d+)\.')
    return sorted({int(rx.match(k).group(1)) for k in conv.keys(rx.pattern)})


def backbone_type(state: Mapping[str, Tensor]) -> str:
    """'resnet' (detectron2 ResNet) or 'swin' (detrex Swin)."""
    if 'backbone.stem.conv1.weight' in state:
        return 'resnet'
    if 'backbone.patch_embed.proj.weight' in state:
        return 'swin'
    raise ConversionError(
        'unknown backbone: expected detectron2 ResNet keys '
        '(backbone.stem.conv1.weight) or detrex Swin keys '
        '(backbone.patch_embed.proj.weight)')


def convert_focus_detr_detrex(
        state: Mapping[str, Tensor]) -> StateDictConverter:
    """Map a detrex Focus-DETR state dict to :class:`FocusDETR` keys."""
    conv = StateDictConverter(state)
    _drop_aliases(conv)
    if backbone_type(state) == 'resnet':
        convert_detectron2_resnet(conv)
    else:
        convert_detrex_swin(conv)
    for key in conv.keys(r'neck\.'):
        conv.move(key, re.sub(r'\.norm\.', '.gn.', key))

    t = 'transformer.'
    conv.move(t + 'level_embeds', 'level_embed')
    conv.move(t + 'tgt_embed.weight', 'query_embedding.weight')
    conv.move_prefix(t + 'enc_output.', 'memory_trans_fc.')
    conv.move_prefix(t + 'enc_output_norm.', 'memory_trans_norm.')
    conv.move_prefix(t + 'enc_mask_predictor.', 'selector.scorer.')
    conv.move(t + 'alpha', 'selector.alpha')
    for i in _layer_ids(conv, t + 'encoder.layers.'):
        _move_encoder_layer(conv, f'{t}encoder.layers.{i}.',
                            f'encoder.layers.{i}.')
    for i in _layer_ids(conv, t + 'decoder.layers.'):
        _move_decoder_layer(conv, f'{t}decoder.layers.{i}.',
                            f'decoder.layers.{i}.')
    conv.move_prefix(t + 'decoder.ref_point_head.', 'decoder.ref_point_head.')
    conv.move_prefix(t + 'decoder.norm.', 'decoder.norm.')

    for key in conv.keys(r'class_embed\.\d+\.'):
        conv.move(key, 'bbox_head.cls_branches.' + key[len('class_embed.'):])
    rx = re.compile(r'bbox_embed\.(\d+)\.layers\.(\d+)\.(.+)$')
    for key in conv.keys(rx.pattern):
        i, j, rest = rx.match(key).groups()
        conv.move(key, f'bbox_head.reg_branches.{i}.{2 * int(j)}.{rest}')
    conv.move('label_enc.weight', 'dn_query_generator.label_embedding.weight')
    return conv


def default_config(state: Mapping[str, Tensor], src_path: str = '') -> str:
    """The config of a released row, from the backbone in ``state`` and the
    schedule in the file name (``12ep`` / ``24ep`` / ``36ep``; 12 epochs if
    the name has none: the 24 / 36-epoch R-50 / R-101 rows differ in the
    position embedding, give ``--config`` for them if renamed)."""
    if backbone_type(state) == 'swin':
        dims = state['backbone.patch_embed.proj.weight'].shape[0]
        if dims != 96:
            raise ConversionError(
                f'Swin with embed_dim {dims}: only Swin-T (96) has a config '
                'here; give --config')
        arch = 'swin-t'
    else:
        from .detectron2_resnet import detectron2_resnet_depth
        depth = detectron2_resnet_depth(state)
        if depth not in (50, 101):
            raise ConversionError(
                f'ResNet-{depth}: only R-50 and R-101 have configs here; '
                'give --config')
        arch = f'r{depth}'
    m = re.search(r'(12|24|36)ep', osp.basename(src_path))
    epochs = m.group(1) if m else '12'
    return f'{CONFIG_DIR}/focus-detr-4scale_{arch}_8xb2-{epochs}e_coco.py'


def main(argv: Optional[Sequence[str]] = None) -> None:
    """``SRC DST [--config CFG]`` (tools/model_converters/
    focus_detr_detrex_to_mmdet.py): SRC may be the released ``.zip``; the
    default config comes from the backbone and SRC's file name."""
    import sys
    argv = list(sys.argv[1:] if argv is None else argv)
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument('src', nargs='?')
    pre.add_argument('dst', nargs='?')
    pre.add_argument('--config')
    known, _ = pre.parse_known_args(argv)
    if known.src is None or not osp.isfile(known.src):
        return _convert_main(argv, '')  # argparse reports the problem
    with checkpoint_in_archive(known.src) as path:
        i = argv.index(known.src)
        _convert_main(argv[:i] + [path] + argv[i + 1:], known.src)


def _convert_main(argv: Sequence[str], src_name: str) -> None:
    convert_main(
        'detrex Focus-DETR checkpoint (projects/focus_detr; .pth or the '
        'released .zip) -> efficient_detr_mm FocusDETR',
        convert_focus_detr_detrex,
        lambda state: default_config(state, src_name),
        argv=argv,
        source='detrex projects/focus_detr ' + osp.basename(src_name) +
        ' (tools/model_converters/focus_detr_detrex_to_mmdet.py)')
