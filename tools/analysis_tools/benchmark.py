"""Side-by-side latency / memory benchmark of several configs.

Builds each model once, runs them interleaved on the same synthetic images
after a warm-up and prints, per model, the median and spread of the
latency, images/s, peak memory and the ratio to the first config
(see efficient_detr_mm/analysis/benchmark.py for what is timed).

``--backend onnxruntime`` exports every config at ``--shape`` (see
tools/deployment/pytorch2onnx.py) and times the ONNX Runtime session on the
same image (batch 1, CPU, fp32, as many threads as PyTorch); with
``--backend pytorch onnxruntime`` both run interleaved in one benchmark, the
ratio column being to the first config of the same backend.

Example::

    python tools/analysis_tools/benchmark.py \\
        configs/dino/dino-4scale_r50_8xb2-12e_coco.py \\
        configs/deformable_detr/deformable-detr-refine-twostage_r50_16xb2-50e_coco.py \\
        --shape 800 1333 --batch-size 8 --device cuda --fp16 --breakdown

    OMP_NUM_THREADS=1 python tools/analysis_tools/benchmark.py \
        configs/dino/dino-4scale_r50_8xb2-12e_coco.py \
        configs/focus_detr/focus-detr-4scale_r50_8xb2-36e_coco.py \
        --shape 512 683 --backend pytorch onnxruntime
"""  # noqa: E501
import argparse
import json
import logging
import os.path as osp
import sys
import tempfile

import torch
from mmengine.config import DictAction
from mmengine.logging import MMLogger

# isort: off
sys.path.insert(0, osp.join(osp.dirname(osp.abspath(__file__)), '..', '..'))
from efficient_detr_mm.analysis.benchmark import (  # noqa: E402
    Benchmark, ModelRun, format_breakdown, format_results)
from efficient_detr_mm.analysis.inputs import (  # noqa: E402
    build_detector, load_config, preprocess, synthetic_images)
from efficient_detr_mm.deployment.pipeline import (  # noqa: E402
    export_for_benchmark, load_export_model)
# isort: on


BACKENDS = ('pytorch', 'onnxruntime')


def parse_args():
    parser = argparse.ArgumentParser(
        description='Interleaved latency / memory benchmark of configs')
    parser.add_argument('configs', nargs='+', help='config files')
    parser.add_argument(
        '--checkpoint',
        nargs='+',
        help='one checkpoint per config (or "none"); default: random init')
    parser.add_argument(
        '--shape',
        type=int,
        nargs=2,
        default=[800, 1333],
        metavar=('H', 'W'),
        help='input size (default 800 1333)')
    parser.add_argument('--batch-size', type=int, default=1)
    parser.add_argument('--device', default='cpu', choices=['cpu', 'cuda'])
    parser.add_argument(
        '--fp16',
        action='store_true',
        help='autocast (float16 on CUDA, bfloat16 on CPU)')
    parser.add_argument(
        '--breakdown', action='store_true', help='time each stage')
    parser.add_argument('--warmup', type=int, default=5)
    parser.add_argument(
        '--repeats', type=int, default=20, help='timed rounds per model')
    parser.add_argument(
        '--backend',
        nargs='+',
        default=['pytorch'],
        choices=BACKENDS,
        help='pytorch and / or onnxruntime (exported at --shape; batch 1, '
        'CPU, fp32)')
    parser.add_argument('--out', help='write the numbers to this JSON file')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override settings of every config, key=value')
    args = parser.parse_args()
    if args.checkpoint and len(args.checkpoint) != len(args.configs):
        parser.error('--checkpoint needs one entry per config '
                     f'({len(args.configs)}), "none" for random weights')
    if args.device == 'cuda' and not torch.cuda.is_available():
        parser.error('--device cuda but no CUDA device is available')
    if 'onnxruntime' in args.backend and (args.batch_size != 1
                                          or args.device != 'cpu'
                                          or args.fp16):
        parser.error('--backend onnxruntime runs batch 1, fp32 on the CPU: '
                     'use --batch-size 1 --device cpu without --fp16')
    if args.batch_size < 1 or args.repeats < 1 or args.warmup < 0:
        parser.error('--batch-size and --repeats must be >= 1, '
                     '--warmup >= 0')
    return args


def unique_names(paths):
    names = [osp.splitext(osp.basename(p))[0] for p in paths]
    return [
        f'{n}#{i}' if names.count(n) > 1 else n for i, n in enumerate(names)
    ]


def log(msg):
    print(msg, flush=True)


def main():
    args = parse_args()
    MMLogger.get_instance('mmengine').setLevel(logging.WARNING)
    images = synthetic_images(tuple(args.shape), args.batch_size)
    ckpts = args.checkpoint or [None] * len(args.configs)
    runs, checks = [], {}
    tmp = tempfile.TemporaryDirectory()
    for name, path, ckpt in zip(
            unique_names(args.configs), args.configs, ckpts):
        log(f'building {name}')
        ckpt = None if ckpt in (None, 'none') else ckpt
        if 'onnxruntime' in args.backend:
            # one model for both backends (ACT's hashes fixed for export)
            wrapper = load_export_model(path, args.shape, ckpt,
                                        cfg_options=args.cfg_options)
            model = wrapper.model
        else:
            model = build_detector(
                load_config(path, args.cfg_options), ckpt, args.device)
        if 'pytorch' in args.backend:
            runs.append(
                ModelRun(
                    name=name if len(args.backend) == 1 else
                    f'{name} [pytorch]',
                    model=model,
                    data=preprocess(model, images)))
        if 'onnxruntime' in args.backend:
            log(f'exporting {name} to ONNX')
            image = images[0].float()[None]
            ort = export_for_benchmark(wrapper, image,
                                       osp.join(tmp.name, f'{name}.onnx'))
            cmp = ort['comparison']
            log(f'{name}: ONNX Runtime vs PyTorch max |score diff| '
                f'{cmp["max_score_diff"]:.2g}, max |box diff| '
                f'{cmp["max_box_diff"]:.2g} px, top detections '
                f'{"agree" if cmp["top_labels_agree"] else "DIFFER"}')
            runs.append(
                ModelRun(
                    name=f'{name} [onnxruntime]',
                    model=None,
                    data=None,
                    call=lambda det=ort['detector'], x=image.numpy(): det(x),
                    backend='onnxruntime',
                    state_nbytes=ort['nbytes']))
            checks[runs[-1].name] = cmp
    bench = Benchmark(
        runs,
        device=args.device,
        fp16=args.fp16,
        breakdown=args.breakdown,
        log=log)
    bench.run(warmup=args.warmup, repeats=args.repeats)
    results = bench.results(args.batch_size)
    for r in results:
        if r['name'] in checks:
            r['onnx_check'] = checks[r['name']]
    device = (
        torch.cuda.get_device_name() if args.device == 'cuda' else 'cpu, '
        f'{torch.get_num_threads()} threads')
    precision = ('fp32' if not args.fp16 else
                 'fp16 autocast' if args.device == 'cuda' else
                 'bf16 autocast')
    title = (f'{device}, input {args.shape[0]}x{args.shape[1]}, batch '
             f'{args.batch_size}, {precision}'
             f', {args.warmup} warm-up + {args.repeats} interleaved rounds')
    print(format_results(results, title))
    if args.breakdown:
        print(format_breakdown(results))
    if args.out:
        with open(args.out, 'w') as f:
            json.dump(
                dict(
                    device=device,
                    shape=args.shape,
                    batch_size=args.batch_size,
                    fp16=args.fp16,
                    warmup=args.warmup,
                    repeats=args.repeats,
                    configs=args.configs,
                    backends=args.backend,
                    results=results),
                f,
                indent=2)


if __name__ == '__main__':
    main()
