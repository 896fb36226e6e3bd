"""Official DETR / DETR-DC5 checkpoints (facebookresearch/detr) -> the
mmdet DETR of this package (``EffDETR``, ``ACTDETR``; SMCA has its own).

The official model is torchvision's ResNet (frozen BN, no
``num_batches_tracked``) + a 1x1 ``input_proj`` + ``nn.Transformer``-style
post-norm layers (``self_attn``, ``multihead_attn``, ``linear1/2``,
``norm1-3``, a decoder ``norm`` applied to every layer's output) + a
``class_embed`` over the 91 COCO ids and a no-object row (92 rows) + a
3-layer ``bbox_embed`` MLP + ``query_embed``.  Each tensor maps to one mmdet
tensor; the class rows are reordered to mmdet's 80 contiguous classes
followed by the no-object row (mmdet's background).

DETR and DETR-DC5 checkpoints have the same keys: whether the last stage is
dilated is a property of the model, not of the tensors.  The CLI picks the
DC5 config when the file name says ``dc5`` (the released
``detr-r50-dc5-f0fb7ef5.pth``), the plain R-50 config otherwise;
``--config`` overrides (needed for R-101).  When the checkpoint carries the
official training ``args`` (a training checkpoint does), they are checked
against the config (``--dilation``, ``--nheads``, ``--pre_norm``, ...), so a
wrong choice fails naming the argument.
"""
import argparse
import os.path as osp
import re
import sys
from typing import Any, Mapping, Optional, Sequence

from torch import Tensor

from .base import (ConversionError, StateDictConverter, coco_class_rows,
                   convert_main, move_torchvision_resnet)

#: DETR's no-object row: index 91 of its 92 class logits
NO_OBJECT = 91

#: official layer-parameter prefix -> mmdet's, inside one transformer layer
#: (the DETR code base; SMCA extends it)
DETR_LAYER_MAP = (
    ('self_attn.', 'self_attn.attn.'),
    ('multihead_attn.', 'cross_attn.attn.'),
    ('linear1.', 'ffn.layers.0.0.'),
    ('linear2.', 'ffn.layers.1.'),
    ('norm1.', 'norms.0.'),
    ('norm2.', 'norms.1.'),
    ('norm3.', 'norms.2.'),
)

DEFAULT_CONFIG = 'configs/detr/detr_r50_8xb2-150e_coco.py'
DC5_CONFIG = 'configs/detr/detr_r50-dc5_8xb2-500e_coco.py'


def convert_detr(src: Mapping[str, Tensor]) -> StateDictConverter:
    """Map an official DETR ``model`` state dict to mmdet's DETR names.

    Args:
        src (Mapping[str, Tensor]): the official state dict.

    Returns:
        StateDictConverter: ``out`` holds the mmdet state dict; source keys
        it did not recognise stay unconsumed (reported by
        :func:`~.base.check_against_model`).
    """
    conv = StateDictConverter(src)
    move_torchvision_resnet(conv, 'backbone.0.body.', 'backbone.')
    conv.move_prefix('input_proj.', 'neck.convs.0.conv.')
    conv.move_prefix('query_embed.', 'query_embedding.')
    conv.move_prefix('transformer.decoder.norm.', 'decoder.post_norm.')
    for key in conv.keys(r'transformer\.(encoder|decoder)\.layers\.\d+\.'):
        m = re.match(r'transformer\.(encoder|decoder)\.layers\.(\d+)\.(.*)',
                     key)
        part, idx, rest = m.groups()
        for old, new in DETR_LAYER_MAP:
            if rest.startswith(old):
                conv.move(key,
                          f'{part}.layers.{idx}.{new}{rest[len(old):]}')
                break
        # an unknown layer key stays unconsumed: named by the check
    rows = coco_class_rows(extra=[NO_OBJECT])
    for name in ('weight', 'bias'):
        key = f'class_embed.{name}'
        if key in src:
            if src[key].shape[0] != NO_OBJECT + 1:
                raise ConversionError(
                    f'{key} has {src[key].shape[0]} rows; a COCO DETR '
                    f'checkpoint has {NO_OBJECT + 1} (91 COCO ids + '
                    'no-object)')
            conv.move(key, f'bbox_head.fc_cls.{name}', lambda v: v[rows])
    conv.move_prefix('bbox_embed.layers.0.', 'bbox_head.reg_ffn.layers.0.0.')
    conv.move_prefix('bbox_embed.layers.1.', 'bbox_head.reg_ffn.layers.1.')
    conv.move_prefix('bbox_embed.layers.2.', 'bbox_head.fc_reg.')
    return conv


def _dilated(block) -> bool:
    return any(
        tuple(getattr(block, name).dilation) != (1, 1)
        for name in ('conv1', 'conv2') if hasattr(block, name))


def dilated_c5(model, block: int = -1) -> Optional[bool]:
    """Whether ``block`` of the last ResNet stage of ``model``'s backbone
    is dilated (``None`` if the backbone has no such stage)."""
    try:
        return _dilated(model.backbone.layer4[block])
    except (AttributeError, IndexError, TypeError):
        return None


def check_official_args(args: Any, model) -> None:
    """Check the training arguments saved in an official checkpoint
    (``argparse.Namespace``; ``None`` checks nothing) against the model of
    the config, for what the tensors' names and shapes cannot show: DC5 or
    not (and torchvision's undilated first block), the number of heads,
    pre-norm layers, the position embedding.

    Raises:
        ConversionError: naming each mismatching argument and what the
            config has.
    """
    if args is None:
        return
    dilated = dilated_c5(model)
    attn = model.encoder.layers[0].self_attn
    ours = {
        'dilation': (dilated, "the backbone's last stage (DETR-DC5: "
                     f'--config {DC5_CONFIG})'),
        'nheads': (getattr(attn, 'num_heads', None),
                   'self_attn_cfg.num_heads'),
        'num_queries': (model.num_queries, 'num_queries'),
        'pre_norm': (False, 'the DETR layers here are post-norm'),
        'position_embedding': ('sine', 'SinePositionalEncoding'),
        'masks': (False, 'no segmentation head'),
    }
    problems = [
        f'--{name} {getattr(args, name)!r} (the config has {value!r}: '
        f'{where})' for name, (value, where) in ours.items()
        if value is not None and hasattr(args, name)
        and getattr(args, name) != value
    ]
    if getattr(args, 'dilation', False) and dilated and dilated_c5(
            model, block=0):
        problems.append(
            'the official DETR-DC5 (torchvision) keeps layer4[0] undilated, '
            "the config's backbone dilates it: use type='DilatedResNet'")
    if problems:
        raise ConversionError(
            'the checkpoint was trained with arguments the config does not '
            'match: ' + '; '.join(problems))


def default_config(path: str) -> str:
    """The config for a checkpoint file: DETR-DC5 R-50 when the file name
    contains ``dc5``, DETR R-50 otherwise (the keys cannot tell).  An R-101
    file name (``r101``) has no default: it needs ``--config``."""
    name = osp.basename(path).lower()
    if 'r101' in name:
        raise ConversionError(
            f'{osp.basename(path)}: an R-101 checkpoint has no default config '
            'here; pass --config with an R-101 DETR config (backbone depth '
            '101)')
    return DC5_CONFIG if 'dc5' in name else DEFAULT_CONFIG


def main(argv: Optional[Sequence[str]] = None) -> None:
    """``SRC DST [--config CFG]``; see the module docstring."""
    args = list(sys.argv[1:] if argv is None else argv)
    # the default config depends on the file name: peek at SRC
    peek = argparse.ArgumentParser(add_help=False)
    peek.add_argument('src', nargs='?', default='')
    peek.add_argument('--config')
    src_path = peek.parse_known_args(args)[0].src
    convert_main(
        'Convert an official DETR / DETR-DC5 checkpoint (facebookresearch/'
        'detr) to this package\'s mmdet DETR. Default config: '
        f'{DC5_CONFIG} if the file name contains "dc5", else '
        f'{DEFAULT_CONFIG}.',
        convert_detr,
        lambda state: default_config(src_path),
        argv=args,
        check_source=check_official_args,
        source='tools/model_converters/detr_to_mmdet.py')


__all__ = [
    'convert_detr', 'check_official_args', 'default_config', 'dilated_c5',
    'main', 'DETR_LAYER_MAP', 'NO_OBJECT', 'DEFAULT_CONFIG', 'DC5_CONFIG'
]
