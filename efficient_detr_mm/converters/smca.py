"""Official single-scale SMCA-DETR checkpoints -> :class:`SMCADETR`.

The official code (gaopengcuhk/SMCA-DETR, a DETR fork) saves
``{'model', 'optimizer', 'lr_scheduler', 'epoch', 'args'}``. Its model:

- ``backbone.0.body.*``: torchvision ResNet with frozen BN -> ``backbone.*``;
- ``input_proj``: the 1x1 projection -> ``neck.convs.0.conv``;
- ``transformer.encoder.layers.i``: DETR post-norm encoder layers;
- ``transformer.decoder.layers.i``: DETR decoder layers plus ``norm4``
  (-> ``norms.3``), ``point2`` (per-head centre offsets ->
  ``gaussian.offset_fc``), ``point3`` (per-head scales, ``type2`` / ``type3``
  -> ``gaussian.scale_fc``) and, in layer 0 only, ``point1`` (the
  reference-centre MLP -> ``decoder.ref_point_head``);
- ``transformer.decoder.norm`` -> ``decoder.post_norm``;
- ``class_embed``: ``Linear(256, 92)`` scored with a sigmoid over all 92
  rows (91 COCO ids + the DETR no-object row, which focal training only
  ever pushes down); the 80 rows at the COCO ids become mmdet's classes,
  the 11 unused ids, row 0 and the no-object row are dropped;
- ``bbox_embed``: the 3-layer box MLP -> ``bbox_head.reg_ffn`` /
  ``fc_reg``; ``query_embed`` -> ``query_embedding``.
"""
import re
from typing import Any, Mapping

from torch import Tensor

from .base import (COCO_IDS, ConversionError, StateDictConverter,
                   coco_class_rows, move_torchvision_resnet)
from .detr import DETR_LAYER_MAP, dilated_c5

#: official ``--dynamic_scale`` -> outputs of ``point3`` per layer (8 heads)
DYNAMIC_SCALE_ROWS = {'type1': 0, 'type2': 8, 'type3': 16, 'type4': 24}

# official (encoder or decoder) layer module -> ours: DETR's + SMCA's
_LAYER_MAP = DETR_LAYER_MAP + (
    ('norm4.', 'norms.3.'),
    ('point2.', 'gaussian.offset_fc.'),
    ('point3.', 'gaussian.scale_fc.'),
)
_LAYER_RX = re.compile(r'transformer\.(encoder|decoder)\.layers\.(\d+)\.')

#: number of rows of the official classifier: 91 COCO ids + no-object
NUM_OFFICIAL_CLASS_ROWS = 92


def _layer_key(part: str, idx: str, rest: str) -> str:
    if part == 'decoder' and idx == '0' and rest.startswith('point1.'):
        return 'decoder.ref_point_head.' + rest[len('point1.'):]
    for src, dst in _LAYER_MAP:
        if rest.startswith(src):
            if part == 'encoder' and src in ('multihead_attn.', 'norm3.',
                                             'norm4.', 'point2.',
                                             'point3.'):
                break
            return f'{part}.layers.{idx}.{dst}{rest[len(src):]}'
    raise ConversionError(
        f'unknown SMCA {part} layer parameter: transformer.{part}.layers.'
        f'{idx}.{rest}')


def convert_smca(src: Mapping[str, Tensor]) -> StateDictConverter:
    """Map an official single-scale SMCA-DETR state dict to ``SMCADETR``.

    Args:
        src (Mapping[str, Tensor]): the official ``model`` state dict.

    Returns:
        StateDictConverter: the converted tensors in ``.out``; every source
        key is consumed (checked by :func:`check_against_model`).

    Raises:
        ConversionError: naming an unknown key, a classifier that does not
            have the 92 COCO-id rows, or an unsupported ``point3`` width
            (``--dynamic_scale type4``).
    """
    conv = StateDictConverter(src)
    multi = conv.keys(r'(input_proj_\d+\.|transformer\.level_embed)')
    if multi:
        raise ConversionError(
            f'{multi[0]}: a multi-scale SMCA checkpoint (the released '
            '"new multi-scale" design of Multi_scale_SMCA.zip, with a '
            'convolutional encoder over 4 levels); this converter handles '
            'single-scale checkpoints only')
    move_torchvision_resnet(conv, 'backbone.0.body.', 'backbone.')
    conv.move_prefix('input_proj.', 'neck.convs.0.conv.')
    conv.move('query_embed.weight', 'query_embedding.weight')
    conv.move_prefix('transformer.decoder.norm.', 'decoder.post_norm.')
    for key in conv.keys(r'transformer\.(encoder|decoder)\.layers\.'):
        m = _LAYER_RX.match(key)
        part, idx = m.group(1), m.group(2)
        rest = key[m.end():]
        if rest.startswith('point3.'):
            rows = src[key].shape[0]
            if rows not in (DYNAMIC_SCALE_ROWS['type2'],
                            DYNAMIC_SCALE_ROWS['type3']):
                raise ConversionError(
                    f'{key} has {rows} outputs: only --dynamic_scale type2 '
                    '(8, modulation=\'per_head_iso\') and type3 (16, '
                    '\'per_head_xy\') are supported (type4, 24, is not '
                    'implemented)')
        conv.move(key, _layer_key(part, idx, rest))

    weight = src.get('class_embed.weight')
    if weight is None:
        raise ConversionError('source checkpoint has no key '
                              "'class_embed.weight'")
    if weight.shape[0] != NUM_OFFICIAL_CLASS_ROWS:
        raise ConversionError(
            f'class_embed.weight has {weight.shape[0]} rows, expected '
            f'{NUM_OFFICIAL_CLASS_ROWS} (COCO ids 0-90 + no-object)')
    rows = coco_class_rows()
    conv.move('class_embed.weight', 'bbox_head.fc_cls.weight',
              lambda w: w[rows])
    conv.move('class_embed.bias', 'bbox_head.fc_cls.bias', lambda b: b[rows])
    conv.move_prefix('bbox_embed.layers.0.', 'bbox_head.reg_ffn.layers.0.0.')
    conv.move_prefix('bbox_embed.layers.1.', 'bbox_head.reg_ffn.layers.1.')
    conv.move_prefix('bbox_embed.layers.2.', 'bbox_head.fc_reg.')
    return conv


#: official ``--dynamic_scale`` -> ``gaussian_cfg.modulation``
DYNAMIC_SCALE_MODULATION = {
    'type1': 'fixed',
    'type2': 'per_head_iso',
    'type3': 'per_head_xy'
}


def check_official_args(args: Any, model) -> None:
    """Check the official training arguments saved in the checkpoint
    against the model built from the config: what the tensors' names and
    shapes cannot show (the Gaussian bandwidth ``--smooth``, the scale type
    ``--dynamic_scale``, a dilated C5, pre-norm layers).

    Args:
        args (argparse.Namespace, optional): the checkpoint's ``args``;
            ``None`` (a bare state dict) checks nothing.
        model (SMCADETR): the model of the config.

    Raises:
        ConversionError: naming each mismatching argument and config key.
    """
    if args is None:
        return
    gauss = model.decoder.layers[0].gaussian
    ours = {
        'dynamic_scale': ({v: k
                           for k, v in DYNAMIC_SCALE_MODULATION.items()
                           }.get(gauss.modulation),
                          'decoder.layer_cfg.gaussian_cfg.modulation='
                          f'{gauss.modulation!r}'),
        'smooth': (gauss.beta,
                   f'decoder.layer_cfg.gaussian_cfg.beta={gauss.beta}'),
        'num_queries': (model.num_queries,
                        f'num_queries={model.num_queries}'),
        'dilation': (dilated_c5(model), 'the backbone\'s last stage'),
        'pre_norm': (False, 'SMCA here is post-norm only'),
        'position_embedding': ('sine', 'SinePositionalEncoding'),
        'masks': (False, 'no segmentation head'),
    }
    problems = []
    for name, (expected, where) in ours.items():
        if not hasattr(args, name) or expected is None:
            continue
        value = getattr(args, name)
        same = (float(value) == float(expected) if name == 'smooth' else
                value == expected)
        if not same:
            problems.append(f'--{name} {value!r} (the config has '
                            f'{expected!r}: {where})')
    if problems:
        raise ConversionError(
            'the checkpoint was trained with arguments the config does not '
            'match: ' + '; '.join(problems))


#: class rows of the official classifier that are dropped (no COCO class)
DROPPED_CLASS_ROWS = sorted(
    set(range(NUM_OFFICIAL_CLASS_ROWS)) - set(COCO_IDS))

__all__ = [
    'convert_smca', 'check_official_args', 'DROPPED_CLASS_ROWS',
    'DYNAMIC_SCALE_ROWS', 'DYNAMIC_SCALE_MODULATION'
]
