"""FLOPs of a DETR-family config, split into backbone / neck / encoder /
decoder / head / other / total, without any dataset.

One multiply-add is one FLOP (fvcore convention, as the papers report).
Deformable attention, ``grid_sample`` and paper modules that define
``flop_count`` are counted (see efficient_detr_mm/analysis/flops.py).

Example::

    python tools/analysis_tools/get_flops.py \\
        configs/dino/dino-4scale_r50_8xb2-12e_coco.py --shape 800 1066
"""
import argparse
import json
import logging
import os.path as osp
import sys

from mmengine.config import DictAction
from mmengine.logging import MMLogger

# isort: off
sys.path.insert(0, osp.join(osp.dirname(osp.abspath(__file__)), '..', '..'))
from efficient_detr_mm.analysis import (  # noqa: E402
    DETECTOR_PARTS, FlopCounter, params_by_part)
from efficient_detr_mm.analysis.inputs import (  # noqa: E402
    build_detector, load_config, preprocess, synthetic_images)
# isort: on

# traced ops that are free in the fvcore convention and not worth a warning
_FREE_PREFIXES = ('aten::size', 'aten::Int', 'aten::view', 'aten::reshape',
                  'aten::permute', 'aten::transpose', 'aten::flatten',
                  'aten::slice', 'aten::select', 'aten::unsqueeze',
                  'aten::squeeze', 'aten::contiguous', 'aten::expand',
                  'aten::dropout', 'aten::cat', 'aten::stack', 'aten::chunk',
                  'aten::split', 'aten::unbind', 'aten::to', 'aten::detach',
                  'aten::ScalarImplicit', 'aten::arange', 'aten::zeros',
                  'aten::ones', 'aten::full', 'aten::empty', 'aten::repeat',
                  'aten::index', 'aten::gather', 'aten::copy_',
                  'aten::masked_fill', 'aten::meshgrid', 'aten::linspace',
                  'aten::new_', 'aten::type_as', 'aten::clone', 'aten::eq',
                  'aten::ne', 'aten::lt', 'aten::gt', 'aten::le', 'aten::ge',
                  'aten::__', 'aten::bitwise', 'aten::logical', 'aten::numel',
                  'aten::floor_divide', 'aten::zeros_like', 'aten::ones_like',
                  'aten::topk', 'aten::sort', 'aten::max_pool2d')


def parse_args():
    parser = argparse.ArgumentParser(
        description='FLOPs (multiply-adds) of a detector, split by part')
    parser.add_argument('config', help='config file')
    parser.add_argument(
        '--shape',
        type=int,
        nargs=2,
        metavar=('H', 'W'),
        help='input size; default 800 1333 (or the --img size)')
    parser.add_argument(
        '--img',
        nargs='+',
        help='count on these images instead of noise (resized to --shape '
        'if given) and average')
    parser.add_argument('--checkpoint', help='optional weights')
    parser.add_argument(
        '--ops', action='store_true', help='also print MACs per operator')
    parser.add_argument('--out', help='write the numbers to this JSON file')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config settings, key=value')
    return parser.parse_args()


def format_table(rows, macs, params, title):
    """The split as a plain-text table."""
    total = macs['total'] or 1
    lines = [
        title, f'{"part":<10} {"GFLOPs":>10} {"share":>7} {"params (M)":>11}',
        '-' * 41
    ]
    for r in rows:
        if r == 'total':
            lines.append('-' * 41)
        share = 100 * macs[r] / total
        lines.append(f'{r:<10} {macs[r] / 1e9:>10.3f} {share:>6.1f}% '
                     f'{params[r] / 1e6:>11.3f}')
    return '\n'.join(lines)


def count_one(counter, model, images):
    """Split of one image; exits with a hint if the input is too small."""
    data = preprocess(model, images)
    meta = data['data_samples'][0].metainfo
    try:
        result = counter.count(
            data['inputs'], data['data_samples'], mode='tensor')
    except RuntimeError as e:
        if 'out of range' in str(e):
            sys.exit(f'{e}\nThe input {meta["img_shape"]} may give fewer '
                     'encoder tokens than the top-k query selection needs '
                     '(num_queries); try a larger --shape.')
        raise
    return result, meta


def main():
    args = parse_args()
    MMLogger.get_instance('mmengine').setLevel(logging.WARNING)
    cfg = load_config(args.config, args.cfg_options)
    shape = tuple(args.shape) if args.shape else (
        None if args.img else (800, 1333))
    model = build_detector(cfg, args.checkpoint)
    counter = FlopCounter(model, DETECTOR_PARTS)
    runs = [
        count_one(counter, model, synthetic_images(shape, img_path=img))
        for img in (args.img or [None])
    ]
    result, meta = runs[0]
    mean = {
        k: round(sum(r.by_part[k] for r, _ in runs) / len(runs))
        for k in counter.rows()
    }
    params = params_by_part(model, DETECTOR_PARTS)
    if len(runs) == 1:
        what = (f'input {meta["img_shape"]}, padded '
                f'{meta["batch_input_shape"]}')
    else:
        what = f'mean of {len(runs)} images'
    title = (f'{osp.basename(args.config)}: {what} (1 GFLOP = 1e9 '
             'multiply-adds)')
    print(format_table(counter.rows(), mean, params, title))
    first = ' (first image)' if len(runs) > 1 else ''
    if result.override_calls:
        print(f'counted by override{first}: ' + ', '.join(
            f'{k} x{v} = {result.by_op["override:" + k] / 1e9:.3f} G'
            for k, v in sorted(result.override_calls.items())))
    if args.ops:
        print(f'MACs per operator{first}:')
        for op, v in result.by_op.most_common():
            print(f'  {op:<50} {v / 1e9:>10.3f} G')
    skipped = sorted(k for k in result.unsupported
                     if not k.startswith(_FREE_PREFIXES))
    if skipped:
        print('not counted (element-wise or unknown, 0 FLOPs): ' +
              ', '.join(skipped))
    if args.out:
        with open(args.out, 'w') as f:
            json.dump(
                dict(
                    config=args.config,
                    img_shape=list(meta['img_shape']),
                    batch_input_shape=list(meta['batch_input_shape']),
                    flops=mean,
                    params=dict(params),
                    by_op=dict(result.by_op),
                    override_calls=dict(result.override_calls),
                    per_image=[
                        dict(
                            img=img,
                            img_shape=list(m['img_shape']),
                            flops=dict(r.by_part))
                        for img, (r, m) in zip(args.img or [None], runs)
                    ]),
                f,
                indent=2)


if __name__ == '__main__':
    main()
