"""Make tests/data/smca_fixture.pth from the official SMCA-DETR code.

    python tests/data/make_smca_fixture.py \
        --official-root /path/to/SMCA-DETR --out tests/data/smca_fixture.pth

Builds the official single-scale SMCA-DETR (gaopengcuhk/SMCA-DETR, its
``models.build_model``) reduced to a ResNet-18 backbone, 1 encoder and 2
decoder layers, FFN width 64 and 20 queries (the official code hard-codes
256-d / 8 heads in the SMCA modules, so those stay), fills it with the
deterministic weights of
:func:`efficient_detr_mm.converters.testing.official_like_state`, runs the
official batch-1 eval forward and ``PostProcess`` on a seeded N(0, 1) input
(already normalised), and saves the state dict's key names and shapes (not
its tensors), the seeds, the official outputs of every decoder layer and the
post-processed detections, the reduced hyper-parameters and the official
commit. The official code is imported from ``--official-root`` and never
copied.
"""
import argparse
import os.path as osp
import subprocess
import sys
from argparse import Namespace

import torch

sys.path.insert(0, osp.join(osp.dirname(osp.abspath(__file__)), '..', '..'))
from efficient_detr_mm.converters.testing import (  # noqa: E402
    official_like_state, random_input, state_spec)

#: reduced official hyper-parameters (official argparse names)
HPARAMS = dict(
    backbone='resnet18',
    hidden_dim=256,
    nheads=8,
    enc_layers=1,
    dec_layers=2,
    dim_feedforward=64,
    num_queries=20,
    dynamic_scale='type3',
    smooth=8.0)
#: random weights give nearly the same hidden state to every query; these
#: make the fixture informative: scales near the official init (point3:
#: weight 0, bias 1) and a sharp co-attention, so that the Gaussian prior
#: and each query's centre matter; query embeddings N(0, 1) (nn.Embedding's
#: init); box sizes spread, so that some boxes cross the image border.
#: With WEIGHT_SEED the official top-20 holds 4 classes, among them COCO id
#: 30 (no COCO class), and 3 boxes cross the border.
OVERRIDES = [(r'point3\.bias$', 2.0, 0.5), (r'^query_embed\.', 0.0, 1.0),
             (r'multihead_attn\.in_proj_weight$', 0.0, 0.1),
             (r'multihead_attn\.out_proj\.weight$', 0.0, 0.2),
             (r'^bbox_embed\.layers\.2\.bias$', 0.0, 1.0)]
WEIGHT_SEED = 2
INPUT_SEED = 3
#: (h, w) not divisible by 32: C5 is 4 x 5
INPUT_HW = (100, 150)


def official_args() -> Namespace:
    """The official argparse namespace (main.py defaults) with HPARAMS."""
    args = Namespace(
        dataset_file='coco',
        device='cpu',
        lr_backbone=1e-5,
        masks=False,
        dilation=False,
        position_embedding='sine',
        dropout=0.1,
        pre_norm=False,
        aux_loss=True,
        frozen_weights=None,
        set_cost_class=2.0,
        set_cost_bbox=5.0,
        set_cost_giou=2.0,
        bbox_loss_coef=5.0,
        giou_loss_coef=2.0,
        mask_loss_coef=1.0,
        dice_loss_coef=1.0,
        eos_coef=0.1)
    for k, v in HPARAMS.items():
        setattr(args, k, v)
    return args


def import_official(root: str):
    """Import the official ``models`` package from ``root``."""
    import torchvision
    sys.path.insert(0, root)
    # util/misc.py parses torchvision.__version__[:3] as a float ('0.2' of
    # 0.2x < 0.7) and then imports helpers of torchvision 0.5; present a
    # version string it reads as new while importing
    version = torchvision.__version__
    torchvision.__version__ = '9.9'
    try:
        import models
        import models.backbone as backbone
    finally:
        torchvision.__version__ = version
    # no ImageNet download: the weights are replaced anyway
    backbone.is_main_process = lambda: False
    return models


def official_commit(root: str) -> str:
    try:
        return subprocess.check_output(['git', 'rev-parse', 'HEAD'],
                                       cwd=root,
                                       text=True).strip()
    except Exception:  # an unpacked archive: give it with --commit
        return 'unknown'


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--official-root', required=True)
    parser.add_argument('--out', default='tests/data/smca_fixture.pth')
    parser.add_argument(
        '--commit', help='official commit (default: git rev-parse HEAD)')
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    models = import_official(osp.abspath(args.official_root))
    official = official_args()
    model, _, postprocessors = models.build_model(official)
    model.eval()
    spec = state_spec(model.state_dict())
    state = official_like_state(spec, WEIGHT_SEED, OVERRIDES)
    model.load_state_dict(state, strict=True)

    h, w = INPUT_HW
    img = random_input((1, 3, h, w), INPUT_SEED)
    size = torch.tensor([h, w])
    out = model([img, [dict(size=size)]])
    layers = out['aux_outputs'] + [
        dict(pred_logits=out['pred_logits'], pred_boxes=out['pred_boxes'])
    ]
    logits = torch.stack([o['pred_logits'] for o in layers])
    boxes = torch.stack([o['pred_boxes'] for o in layers])
    det = postprocessors['bbox'](out, size[None])[0]
    order = det['scores'].argsort(descending=True)  # topk(sorted=False)
    fixture = dict(
        official_repo='gaopengcuhk/SMCA-DETR',
        official_commit=args.commit or official_commit(args.official_root),
        hparams=HPARAMS,
        official_args=vars(official),  # what main.py saves as 'args'
        spec=dict(spec),
        weight_seed=WEIGHT_SEED,
        overrides=OVERRIDES,
        input_seed=INPUT_SEED,
        input_shape=(1, 3, h, w),
        input_sum=float(img.sum()),
        logits=logits.contiguous(),  # (layers, 1, nq, 92) COCO-id rows
        boxes=boxes.contiguous(),  # (layers, 1, nq, 4) cx, cy, w, h
        det_scores=det['scores'][order].contiguous(),
        det_labels=det['labels'][order].contiguous(),  # COCO ids
        det_boxes=det['boxes'][order].contiguous())  # xyxy pixels
    torch.save(fixture, args.out)
    print(f'{len(spec)} official tensors; logits {tuple(logits.shape)}, '
          f'{len(order)} detections -> {args.out}')


if __name__ == '__main__':
    main()
