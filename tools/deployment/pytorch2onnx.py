"""Export a config's detector to ONNX and check it with ONNX Runtime.

The graph takes one (1, 3, H, W) float32 image (pixel values 0-255, BGR as
mmcv loads it) of the given size and returns ``boxes`` (k, 4, x1y1x2y2 in
input pixels), ``scores`` (k,) and ``labels`` (k,): what mmdet's ``predict``
returns for that input (see efficient_detr_mm/deployment/export.py and
docs/deployment.md).  After the export ONNX Runtime runs the same input; the
script prints the largest score / box difference to PyTorch and whether the
top detections agree, and exits with status 1 when they do not.

Example::

    python tools/deployment/pytorch2onnx.py \\
        configs/focus_detr/focus-detr-4scale_r50_8xb2-36e_coco.py \\
        --checkpoint focus_detr_r50_36e.pth --shape 800 1088 \\
        --out focus_detr.onnx --img demo.jpg
"""
import argparse
import logging
import os.path as osp
import sys

from mmengine.config import DictAction
from mmengine.logging import MMLogger

# isort: off
sys.path.insert(0, osp.join(osp.dirname(osp.abspath(__file__)), '..', '..'))
from efficient_detr_mm.deployment import (  # noqa: E402
    DEFAULT_OPSET, export_and_check, format_comparison)
# isort: on


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description='Export a detector to ONNX, check with ONNX Runtime')
    p.add_argument('config', help='config file')
    p.add_argument(
        '--checkpoint', help='checkpoint (default: random initialisation)')
    p.add_argument(
        '--shape',
        type=int,
        nargs=2,
        required=True,
        metavar=('H', 'W'),
        help='fixed input size of the exported graph')
    p.add_argument('--out', required=True, help='output .onnx file')
    p.add_argument('--opset', type=int, default=DEFAULT_OPSET)
    p.add_argument(
        '--img',
        help='image traced and compared on (resized to --shape); '
        'default: a noise image')
    p.add_argument(
        '--act-seed',
        type=int,
        default=0,
        help='ACT: base seed of the fixed hash projections (layer i gets '
        'seed + i) when the config sets none')
    p.add_argument(
        '--atol',
        type=float,
        default=1e-3,
        help='score / box (pixel) tolerance of the check')
    p.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config settings, key=value')
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    MMLogger.get_instance('mmengine').setLevel(logging.WARNING)
    try:
        res = export_and_check(
            args.config,
            args.out,
            args.shape,
            checkpoint=args.checkpoint,
            opset=args.opset,
            img_path=args.img,
            act_seed=args.act_seed,
            atol=args.atol,
            cfg_options=args.cfg_options)
    except ValueError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    if res['act_seeds']:
        print('ACT hash projections fixed in the graph, seeds '
              f'{res["act_seeds"]}')
    cmp = res['comparisons'][0]
    print(f'ONNX Runtime vs PyTorch on the same input: '
          f'{format_comparison(cmp)}')
    if not res['ok']:
        print(f'FAILED: ONNX Runtime differs from PyTorch by more than '
              f'{args.atol}', file=sys.stderr)
        return 1
    print(f'OK: {args.out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
