"""Make tests/data/detr_fixture.pth from the official DETR code.

    python tests/data/make_detr_fixture.py --official-root /path/to/detr \
        --out tests/data/detr_fixture.pth

``/path/to/detr`` is a checkout of github.com/facebookresearch/detr (its
models/ and util/ are imported; it needs torchvision and scipy on the
path).  Two reduced official models are built with the official ``build``
(64-d transformer, 8 heads, 2 encoder / 3 decoder layers, 128-d FFN, 20
queries):

* ``detr_r18``: plain DETR, torchvision ResNet-18 (the official Backbone
  accepts it);
* ``detr_r50_dc5``: DETR-DC5, torchvision ResNet-50 with
  ``replace_stride_with_dilation=[False, False, True]`` (the official
  ``--dilation``; ResNet-18/34 cannot be dilated in torchvision).

Weights are not stored: each model is filled with
:func:`efficient_detr_mm.converters.testing.official_like_state` (key
names, shapes and a seed are stored) plus a few stored ``overrides``: the
object queries ~ N(0, 1) (``nn.Embedding``'s init, so that the queries
differ enough to attend differently), and the class head's 11 unused
COCO-id rows get a bias of -50 and zero weights, as training leaves them
(they are never a target), because the official post-processing takes the
softmax over all 92 rows while mmdet's runs over the 80 classes +
background.  The model runs in eval mode, batch 1, on a
fixed normalised 3x96x128 input (no padding); the fixture stores the input,
every decoder layer's logits (92 rows) and boxes, and the official
``PostProcess`` detections for an original size equal to the input size.
"""
import argparse
import importlib.util
import os.path as osp
import subprocess
import sys
from collections import OrderedDict

import torch

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))

#: reduced hyper-parameters shared by both cases (official argument names)
REDUCED = dict(
    hidden_dim=64,
    nheads=8,
    enc_layers=2,
    dec_layers=3,
    dim_feedforward=128,
    num_queries=20,
    dropout=0.0,
    pre_norm=False,
    position_embedding='sine')
CASES = {
    'detr_r18': dict(backbone='resnet18', dilation=False, seed=1),
    'detr_r50_dc5': dict(backbone='resnet50', dilation=True, seed=2),
}
INPUT_SHAPE = (1, 3, 96, 128)
#: the 11 COCO ids below 91 that are no category (DETR's unused rows)
UNUSED_IDS = [0, 12, 26, 29, 30, 45, 66, 68, 69, 71, 83]


def _load_testing():
    """efficient_detr_mm/converters/testing.py without importing the
    package (which needs mmdet)."""
    path = osp.join(REPO, 'efficient_detr_mm', 'converters', 'testing.py')
    spec = importlib.util.spec_from_file_location('_fixture_testing', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def import_torchvision() -> None:
    """Import torchvision even when its compiled ops cannot load (e.g. a
    CUDA build on a CPU-only torch): registering their fake kernels is
    skipped.  DETR uses only pure-Python parts (ResNet,
    IntermediateLayerGetter, box_area)."""
    import torch.library
    try:
        import torchvision  # noqa: F401
        return
    except RuntimeError:
        pass
    for name in list(sys.modules):
        if name.startswith('torchvision'):
            del sys.modules[name]
    register_fake = torch.library.register_fake
    torch.library.register_fake = lambda *args, **kwargs: (lambda fn: fn)
    try:
        import torchvision  # noqa: F401,F811
    finally:
        torch.library.register_fake = register_fake


def official_args(case: dict) -> argparse.Namespace:
    """The official main.py arguments for one reduced model."""
    return argparse.Namespace(
        **REDUCED,
        backbone=case['backbone'],
        dilation=case['dilation'],
        lr_backbone=1e-5,
        masks=False,
        aux_loss=True,
        dataset_file='coco',
        device='cpu',
        frozen_weights=None,
        set_cost_class=1.0,
        set_cost_bbox=5.0,
        set_cost_giou=2.0,
        mask_loss_coef=1.0,
        dice_loss_coef=1.0,
        bbox_loss_coef=5.0,
        giou_loss_coef=2.0,
        eos_coef=0.1)


def make_case(name: str, case: dict, testing) -> dict:
    import models.backbone as official_backbone
    from models.detr import build

    # torchvision would download ImageNet weights in the main process
    official_backbone.is_main_process = lambda: False
    model, _, postprocessors = build(official_args(case))
    model.eval()
    template = model.state_dict()
    spec = OrderedDict((k, list(v.shape)) for k, v in template.items())
    state = testing.official_like_state(spec, case['seed'])
    # nn.Embedding's own init, N(0, 1): distinct queries attend differently
    query = torch.randn(
        state['query_embed.weight'].shape,
        generator=torch.Generator().manual_seed(200 + case['seed']))
    weight = state['class_embed.weight'].clone()
    bias = state['class_embed.bias'].clone()
    weight[UNUSED_IDS] = 0.0
    bias[UNUSED_IDS] = -50.0
    overrides = OrderedDict([('query_embed.weight', query),
                             ('class_embed.weight', weight),
                             ('class_embed.bias', bias)])
    state.update(overrides)
    model.load_state_dict(state, strict=True)

    gen = torch.Generator().manual_seed(100 + case['seed'])
    img = torch.randn(INPUT_SHAPE, generator=gen)
    with torch.no_grad():
        out = model([img[0]])
        logits = torch.stack(
            [a['pred_logits'] for a in out['aux_outputs']] +
            [out['pred_logits']])
        boxes = torch.stack([a['pred_boxes'] for a in out['aux_outputs']] +
                            [out['pred_boxes']])
        h, w = INPUT_SHAPE[2:]
        dets = postprocessors['bbox'](out, torch.tensor([[h, w]]))[0]
    checksum = sum(float(v.double().sum()) for v in state.values())
    print(f'{name}: {len(spec)} tensors, '
          f'{sum(v.numel() for v in state.values())} values, '
          f'logits {tuple(logits.shape)}, |logits| max '
          f'{logits.abs().max():.3f}')
    return dict(
        official_args=dict(REDUCED, backbone=case['backbone'],
                           dilation=case['dilation']),
        spec=spec,
        seed=case['seed'],
        overrides=overrides,
        state_checksum=checksum,
        input=img,
        logits=logits,
        boxes=boxes,
        detections=dict(
            scores=dets['scores'],
            labels=dets['labels'],
            boxes=dets['boxes']))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument(
        '--official-root',
        required=True,
        help='checkout of github.com/facebookresearch/detr')
    parser.add_argument(
        '--out', default=osp.join(REPO, 'tests', 'data', 'detr_fixture.pth'))
    args = parser.parse_args()
    root = osp.abspath(args.official_root)
    sys.path.insert(0, root)
    try:
        commit = subprocess.run(['git', 'rev-parse', 'HEAD'],
                                cwd=root,
                                capture_output=True,
                                text=True).stdout.strip()
    except OSError:
        commit = ''
    commit = commit or input_commit(root)
    torch.set_num_threads(1)
    import_torchvision()
    testing = _load_testing()
    fixture = dict(
        official_repo='https://github.com/facebookresearch/detr',
        official_commit=commit,
        cases={n: make_case(n, c, testing)
               for n, c in CASES.items()})
    torch.save(fixture, args.out)
    print(f'wrote {args.out} (official commit {commit})')


def input_commit(root: str) -> str:
    """The commit of an exported (non-git) checkout: COMMIT file or ''."""
    path = osp.join(root, 'COMMIT')
    if osp.isfile(path):
        with open(path) as f:
            return f.read().strip()
    return ''


if __name__ == '__main__':
    main()
