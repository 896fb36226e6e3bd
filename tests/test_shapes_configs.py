"""The tiny ``*_shapes.py`` configs: each paper's tiny config inherits its
baseline's tiny config (data, schedule, shrinking in one place) and is its
COCO counterpart shrunk: the two models differ only in sizes."""
import ast
import glob
import os.path as osp

import pytest
from helpers import REPO
from mmengine.config import Config

CONFIGS = osp.join(REPO, 'configs')
BASELINE_FAMILIES = ('detr', 'deformable_detr', 'dino')
SHAPES = sorted(
    osp.relpath(p, CONFIGS)
    for p in glob.glob(osp.join(CONFIGS, '*', '*_shapes.py')))
PAPER_SHAPES = [
    c for c in SHAPES if c.split('/')[0] not in BASELINE_FAMILIES
]

# what a tiny config may change in its COCO counterpart's model (the last
# key of each differing leaf): depths, widths, counts and the from-scratch
# backbone's trainable BN; and the backbone's init_cfg
SIZE_KEYS = {
    'depth', 'frozen_stages', 'requires_grad', 'norm_eval', 'embed_dims',
    'num_classes', 'feedforward_channels', 'low_ffn_channels', 'num_layers',
    'layer_types', 'num_dn_queries', 'num_fine_tokens', 'cascade',
    'in_channels', 'out_channels', 'num_queries', 'num_feats', 'max_per_img'
}


def bases(rel: str) -> list:
    """The ``_base_`` files of a config (relative to configs/)."""
    path = osp.join(CONFIGS, rel)
    with open(path) as f:
        tree = ast.parse(f.read())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
                getattr(t, 'id', None) == '_base_' for t in node.targets):
            value = ast.literal_eval(node.value)
            value = [value] if isinstance(value, str) else value
            return [
                osp.relpath(
                    osp.normpath(osp.join(osp.dirname(path), v)), CONFIGS)
                for v in value if not v.startswith('mmdet::')
            ]
    return []


@pytest.mark.parametrize('rel', PAPER_SHAPES)
def test_paper_tiny_config_inherits_baseline_tiny(rel):
    """Up the ``_base_`` chain a baseline's tiny config comes before any
    COCO config (no second copy of the data / schedule block)."""
    chain, todo = [], [rel]
    while todo:
        cur = todo.pop()
        if cur.split('/')[0] in BASELINE_FAMILIES:
            assert cur.endswith('_shapes.py'), (rel, chain + [cur])
            return
        assert not cur.endswith('_coco.py'), (
            f'{rel} inherits the COCO config {cur} (chain {chain}); '
            'inherit the baseline\'s tiny config instead')
        chain.append(cur)
        todo += bases(cur)
    pytest.fail(f'{rel}: no baseline tiny config among its bases {chain}')


def coco_counterpart(rel: str) -> str:
    """``X_r18-tiny[-dc5]_..._shapes.py`` -> the first
    ``X_r50[-dc5]_..._coco.py`` in the same folder."""
    folder, name = rel.split('/')
    stem, rest = name.split('_r18-tiny', 1)
    dc5 = '-dc5' if rest.startswith('-dc5') else ''
    found = sorted(
        glob.glob(osp.join(CONFIGS, folder, f'{stem}_r50{dc5}_*_coco.py')))
    assert found, f'{rel}: no COCO counterpart {stem}_r50{dc5}_*_coco.py'
    return osp.relpath(found[0], CONFIGS)


def leaves(d, prefix=()):
    if isinstance(d, dict):
        out = {}
        for k, v in d.items():
            out.update(leaves(v, prefix + (k, )))
        return out
    return {prefix: d}


@pytest.mark.parametrize('rel', SHAPES)
def test_tiny_model_is_coco_model_shrunk(rel):
    coco = coco_counterpart(rel)
    tiny = leaves(Config.fromfile(osp.join(CONFIGS, rel)).model.to_dict())
    full = leaves(Config.fromfile(osp.join(CONFIGS, coco)).model.to_dict())
    # init_cfg=None (tiny) vs a Pretrained dict (COCO)
    differ = [
        '.'.join(map(str, k)) for k in sorted(set(tiny) | set(full))
        if tiny.get(k, '<unset>') != full.get(k, '<unset>')
        and k[-1] not in SIZE_KEYS and 'init_cfg' not in k
    ]
    assert not differ, (
        f'{rel} and {coco} differ in settings other than sizes: {differ}')
