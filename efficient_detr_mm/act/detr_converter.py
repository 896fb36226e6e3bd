"""Convert an official DETR checkpoint (facebookresearch/detr, e.g.
``detr-r50-dc5-f0fb7ef5.pth``, the weights ACT was evaluated on) to mmdet's
DETR parameter names, so that ``ACTDETR`` / ``EffDETR`` load it strictly.

    python -m efficient_detr_mm.act.detr_converter SRC.pth DST.pth

Keys are renamed (backbone, input projection, encoder / decoder layers,
query embedding, heads) and the 92 COCO-id class logits (91 ids + no-object)
are reduced to mmdet's 80 contiguous classes + background.  Caveat: DETR's
DC5 backbone (torchvision) does not dilate the first block of the last stage;
mmdet's ``ResNet(dilations=(1, 1, 1, 2))`` does.
"""
import argparse
import re
from collections import OrderedDict
from typing import Dict, List

import torch
from torch import Tensor

#: the 80 COCO category ids in mmdet's class order
COCO_IDS: List[int] = [
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21,
    22, 23, 24, 25, 27, 28, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42,
    43, 44, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61,
    62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84,
    85, 86, 87, 88, 89, 90
]
NO_OBJECT = 91

_LAYER_MAP = [
    (r'self_attn\.', 'self_attn.attn.'),
    (r'multihead_attn\.', 'cross_attn.attn.'),
    (r'linear1\.', 'ffn.layers.0.0.'),
    (r'linear2\.', 'ffn.layers.1.'),
    (r'norm1\.', 'norms.0.'),
    (r'norm2\.', 'norms.1.'),
    (r'norm3\.', 'norms.2.'),
]
_TOP_MAP = [
    (r'^backbone\.0\.body\.', 'backbone.'),
    (r'^input_proj\.', 'neck.convs.0.conv.'),
    (r'^query_embed\.', 'query_embedding.'),
    (r'^transformer\.decoder\.norm\.', 'decoder.post_norm.'),
    (r'^class_embed\.', 'bbox_head.fc_cls.'),
    (r'^bbox_embed\.layers\.0\.', 'bbox_head.reg_ffn.layers.0.0.'),
    (r'^bbox_embed\.layers\.1\.', 'bbox_head.reg_ffn.layers.1.'),
    (r'^bbox_embed\.layers\.2\.', 'bbox_head.fc_reg.'),
]


def convert_key(key: str) -> str:
    """mmdet name of one official DETR parameter."""
    m = re.match(r'^transformer\.(encoder|decoder)\.layers\.(\d+)\.(.*)$',
                 key)
    if m:
        part, idx, rest = m.groups()
        for pat, rep in _LAYER_MAP:
            if re.match(pat, rest):
                rest = re.sub(pat, rep, rest, count=1)
                break
        else:
            raise KeyError(f'unknown DETR layer parameter: {key}')
        return f'{part}.layers.{idx}.{rest}'
    for pat, rep in _TOP_MAP:
        if re.match(pat, key):
            return re.sub(pat, rep, key, count=1)
    raise KeyError(f'unknown DETR parameter: {key}')


def convert_detr(state: Dict[str, Tensor]) -> 'OrderedDict[str, Tensor]':
    """Official DETR state dict -> mmdet DETR state dict.

    Args:
        state (dict): the official ``model`` state dict.

    Returns:
        OrderedDict: mmdet names; frozen-BN layers get the
        ``num_batches_tracked`` buffer mmdet's BN has; class logits in
        mmdet's order (80 classes, then background).
    """
    out = OrderedDict()
    rows = torch.tensor(COCO_IDS + [NO_OBJECT])
    for key, val in state.items():
        new = convert_key(key)
        if new.startswith('bbox_head.fc_cls.'):
            val = val[rows]
        out[new] = val
        if new.startswith('backbone.') and new.endswith('.running_var'):
            out[new[:-len('running_var')] + 'num_batches_tracked'] = \
                torch.tensor(0)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('src', help='official DETR checkpoint')
    p.add_argument('dst', help='output mmdet checkpoint')
    args = p.parse_args()
    ckpt = torch.load(args.src, map_location='cpu', weights_only=False)
    state = ckpt.get('model', ckpt)
    torch.save(dict(state_dict=convert_detr(state), meta=dict()), args.dst)
    print(f'converted {len(state)} tensors -> {args.dst}')


if __name__ == '__main__':
    main()
