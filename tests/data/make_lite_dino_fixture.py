"""Make tests/data/lite_dino_fixture.pth from the official Lite-DETR code.

    python tests/data/make_lite_dino_fixture.py \
        --official-root /path/to/IDEA-Research/Lite-DETR \
        --out tests/data/lite_dino_fixture.pth

For each released Lite-DINO R-50 variant (``r50_s2ex3``, ``r50_s3ex1``,
``r50_s3ex3``: ``enc_scale`` / ``num_expansion`` = 2/3, 3/1, 3/3) this builds
the official model from the official code and config
(``config/DINO/DINO_4scale.py`` + ``--options key_aware=True enc_scale=S
num_expansion=E``, as the official README runs it) and records:

* ``num_params`` / ``num_trainable_params``: the parameter counts
  (``parameters()``, all / ``requires_grad``) of the full released model
  (900 queries, 91 COCO-id classes), counted by the official model itself
  (its frozen BatchNorm keeps the affine weights as buffers, so they are
  not parameters there);
* a reduced copy of the same model (only ``num_queries`` reduced, to 30; a
  64 x 96 input has 128 tokens) filled with deterministic random weights
  (:func:`efficient_detr_mm.converters.testing.official_like_state` from the
  ``seed``; the fixture keeps the key names, shapes, aliases and per-key
  checksums, not the ~170 MB of values), with the class rows of the 11
  unused COCO ids (and id 0) biased to -10 as in trained checkpoints (they
  never win the official top-k over all 91 rows; these few tensors are
  stored as ``overrides``);
* its eval outputs on one fixed, already normalised 3 x 64 x 96 input:
  class logits (91 COCO-id columns) and boxes of every decoder layer, the
  encoder-output (two-stage) proposals, and the official ``PostProcess``
  detections (top ``num_select`` = 300 over queries x classes, absolute xyxy
  boxes, COCO-id labels);
* the official ``inverse_sigmoid`` (box refinement) on references at and
  beyond 1e-3 / 0.999, where the eps matters;
* the resize and normalisation of the official COCO eval transform and the
  released model's hyper-parameters (``released_args``).

The official code is imported from ``--official-root`` only. Its CUDA
extension (``MultiScaleDeformableAttention``) is never called: with
``key_aware=True`` every deformable attention runs the pure-PyTorch
``ms_deform_attn_core_pytorch_key_aware``; the module is stubbed so that the
import succeeds. ``timm`` (imported by the unused ConvNeXt / Swin backbones)
is stubbed when missing, and torchvision's fake-kernel registrations (which
need torchvision's compiled ops) are skipped. No pretrained weights are
downloaded.
"""
import argparse
import os.path as osp
import runpy
import subprocess
import sys
import types
from collections import OrderedDict

import torch

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, REPO)
# torchvision's fake-kernel registrations need its compiled ops, which a
# torchvision wheel built for another torch lacks; eager CPU runs need none
sys.modules.setdefault('torchvision._meta_registrations',
                       types.ModuleType('torchvision._meta_registrations'))

#: released checkpoints -> (enc_scale, num_expansion)
VARIANTS = OrderedDict([('r50_s2ex3', (2, 3)), ('r50_s3ex1', (3, 1)),
                        ('r50_s3ex3', (3, 3))])
NUM_QUERIES = 30
INPUT_SHAPE = (1, 3, 64, 96)
UNUSED_ID_BIAS = -10.0


def _stub(name, **attrs):
    mod = types.ModuleType(name)
    for k, v in attrs.items():
        setattr(mod, k, v)
    sys.modules[name] = mod


def import_official(root):
    """Put the official repo on the path and import its DINO builder."""
    sys.path.insert(0, root)
    _stub('MultiScaleDeformableAttention')
    try:
        import timm.models.layers  # noqa: F401
    except ImportError:

        def unused(*args, **kwargs):
            raise RuntimeError('timm is stubbed: only the ResNet path of '
                               'the official code is used here')

        for name in ('timm', 'timm.models', 'timm.models.layers'):
            _stub(name, trunc_normal_=unused, DropPath=unused,
                  to_2tuple=unused)
    from models.dino import backbone as official_backbone
    official_backbone.is_main_process = lambda: False  # no download
    import models.dino  # noqa: F401  (registers 'dino')
    from models.registry import MODULE_BUILD_FUNCS
    return MODULE_BUILD_FUNCS.get('dino')


def official_args(root, **options):
    """The official config (DINO_4scale.py on top of coco_transformer.py)
    as the ``argparse.Namespace`` main.py builds, plus ``options``."""
    cfg = {}
    for name in ('coco_transformer.py', 'DINO_4scale.py'):
        values = runpy.run_path(osp.join(root, 'config', 'DINO', name))
        cfg.update({
            k: v
            for k, v in values.items()
            if not k.startswith('_') and not isinstance(v, types.ModuleType)
        })
    cfg.update(device='cpu', dataset_file='coco', masks=False,
               frozen_weights=None, eval=True)
    cfg.update(options)
    return argparse.Namespace(**cfg)


def commit_of(root):
    try:
        return subprocess.check_output(['git', '-C', root, 'rev-parse',
                                        'HEAD'],
                                       text=True,
                                       stderr=subprocess.DEVNULL).strip()
    except (OSError, subprocess.CalledProcessError):
        return 'unknown'


def unused_rows():
    from efficient_detr_mm.converters import COCO_IDS
    return [i for i in range(91) if i not in set(COCO_IDS)]


def eval_preprocessing(args):
    """Resize and normalisation of the official COCO eval transform
    (``datasets/coco.py``, ``make_coco_transforms('val')``)."""
    from datasets.coco import make_coco_transforms
    found = {}

    def walk(t):
        name = type(t).__name__
        if name == 'RandomResize':
            found['resize_sizes'] = list(t.sizes)
            found['resize_max_size'] = t.max_size
        elif name == 'Normalize':
            found['mean'] = list(t.mean)
            found['std'] = list(t.std)
        for child in getattr(t, 'transforms', []):
            walk(child)

    walk(make_coco_transforms('val', args=args))
    return found


def make_variant(build, root, enc_scale, num_expansion, seed):
    from efficient_detr_mm.converters.testing import (alias_groups,
                                                      expand_aliases,
                                                      official_like_state,
                                                      state_spec)
    opts = dict(key_aware=True, enc_scale=enc_scale,
                num_expansion=num_expansion)
    full, _, _ = build(official_args(root, **opts))
    num_params = sum(p.numel() for p in full.parameters())
    num_trainable = sum(p.numel() for p in full.parameters()
                        if p.requires_grad)
    del full

    args = official_args(root, num_queries=NUM_QUERIES, **opts)
    model, _, postprocessors = build(args)
    model.eval()
    initial = model.state_dict()
    aliases = alias_groups(initial)
    spec = OrderedDict(
        (k, s) for k, s in state_spec(initial).items() if k not in aliases)
    state = official_like_state(spec, seed)
    overrides = OrderedDict()
    for k in spec:
        if k.endswith('bias') and ('class_embed' in k):
            assert state[k].shape[0] == 91, k
            b = state[k].clone()
            b[unused_rows()] = UNUSED_ID_BIAS
            overrides[k] = b
    state.update(overrides)
    model.load_state_dict(
        expand_aliases(state, aliases, order=list(initial)), strict=True)
    # what the model holds is what the fixture describes
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[aliases.get(k, k)]), k

    g = torch.Generator().manual_seed(seed + 1)
    img = torch.randn(INPUT_SHAPE, generator=g)
    with torch.no_grad():
        out = model(img)
        layers = out['aux_outputs'] + [
            dict(pred_logits=out['pred_logits'],
                 pred_boxes=out['pred_boxes'])
        ]
        logits = torch.stack([o['pred_logits'] for o in layers])
        boxes = torch.stack([o['pred_boxes'] for o in layers])
        h, w = INPUT_SHAPE[-2:]
        dets = postprocessors['bbox'](out, torch.tensor([[h, w]]))[0]
    return dict(
        num_params=num_params,
        num_trainable_params=num_trainable,
        args=dict(
            enc_scale=enc_scale,
            num_expansion=num_expansion,
            key_aware=True,
            num_queries=NUM_QUERIES,
            num_select=args.num_select,
            hidden_dim=args.hidden_dim,
            enc_layers=args.enc_layers,
            dec_layers=args.dec_layers,
            num_classes=args.num_classes,
            dn_labelbook_size=args.dn_labelbook_size,
            small_expand=args.small_expand,
            dec_pred_class_embed_share=args.dec_pred_class_embed_share,
            dec_pred_bbox_embed_share=args.dec_pred_bbox_embed_share,
            backbone=args.backbone),
        seed=seed,
        spec=spec,
        aliases=aliases,
        overrides=overrides,
        checksums=OrderedDict(
            (k, float(v.double().sum())) for k, v in state.items()),
        input=img,
        logits=logits[:, 0],
        boxes=boxes[:, 0],
        enc_logits=out['interm_outputs']['pred_logits'][0],
        enc_boxes=out['interm_outputs']['pred_boxes'][0],
        det_scores=dets['scores'],
        det_labels=dets['labels'],
        det_boxes=dets['boxes'])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--official-root', required=True)
    parser.add_argument('--out',
                        default=osp.join(REPO, 'tests', 'data',
                                         'lite_dino_fixture.pth'))
    parser.add_argument('--seed', type=int, default=2023)
    parser.add_argument(
        '--commit',
        help='official commit to record (default: git rev-parse HEAD of '
        '--official-root)')
    args = parser.parse_args()
    root = osp.abspath(args.official_root)
    torch.set_num_threads(1)
    build = import_official(root)
    fixture = dict(
        official_repo='IDEA-Research/Lite-DETR',
        official_commit=args.commit or commit_of(root),
        input_shape=INPUT_SHAPE,
        unused_id_bias=UNUSED_ID_BIAS,
        variants=OrderedDict())
    # the official box refinement's inverse_sigmoid at saturated
    # references (random weights rarely reach that regime)
    from util.misc import inverse_sigmoid
    probe = torch.tensor([0.0, 1e-6, 2e-4, 9e-4, 0.02, 0.5, 0.97, 0.9991,
                          0.9998, 1.0])
    fixture['inverse_sigmoid_probe'] = (probe, inverse_sigmoid(probe))
    released = official_args(root)
    fixture['eval_preprocessing'] = eval_preprocessing(released)
    fixture['released_args'] = {
        k: getattr(released, k)
        for k in ('num_queries', 'num_select', 'hidden_dim', 'nheads',
                  'enc_layers', 'dec_layers', 'dim_feedforward_enc',
                  'dim_feedforward_dec', 'dropout', 'enc_n_points',
                  'dec_n_points', 'num_feature_levels', 'pe_temperatureH',
                  'pe_temperatureW', 'dn_number', 'dn_label_noise_ratio',
                  'dn_box_noise_scale', 'small_expand',
                  'return_interm_indices')
    }
    print('official eval preprocessing:', fixture['eval_preprocessing'])
    for i, (name, (s, e)) in enumerate(VARIANTS.items()):
        v = make_variant(build, root, s, e, args.seed + 10 * i)
        fixture['variants'][name] = v
        print(f'{name}: {v["num_params"]} parameters, '
              f'{v["num_trainable_params"]} trainable (full model), '
              f'{len(v["spec"])} tensors, {len(v["aliases"])} aliases, '
              f'{len(v["det_scores"])} detections')
    torch.save(fixture, args.out)
    print(f'official commit {fixture["official_commit"]} -> {args.out}')


if __name__ == '__main__':
    main()
