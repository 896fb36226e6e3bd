"""Draw the sampling points and attention weights of chosen encoder queries:
key-aware deformable attention (Lite DETR) next to multi-scale deformable
attention (e.g. the DINO / Deformable-DETR baseline).

Each query (a cross) is the encoder token whose reference point is nearest
to a chosen pixel; its sampling points have one colour per query and one
marker per feature level (o s ^ D = strides 8 16 32 64), with area
proportional to the attention weight.

Example::

    python tools/analysis_tools/visualize_kda.py \\
        configs/lite_detr/lite-dino-h3l1-3blk_r50_8xb2-36e_coco.py lite.pth \\
        --compare-config configs/dino/dino-4scale_r50_8xb2-12e_coco.py \\
        --compare-checkpoint dino.pth \\
        --img demo.jpg --points 320 240 500 300 --out kda_vs_msda.png

Without checkpoints the models keep their initial weights.  ``--layer``
picks the encoder layer (default: the last, an all-token layer in Lite
DETR; in a high-level-only layer only high-level tokens are queries).
"""
import argparse
import json
import os.path as osp
import sys

import torch
from mmengine.config import Config, DictAction
from mmengine.registry import init_default_scope

# isort: off
sys.path.insert(0, osp.join(osp.dirname(osp.abspath(__file__)), '..', '..'))
import efficient_detr_mm  # noqa: E402,F401
from efficient_detr_mm.visualization.kda import (  # noqa: E402
    capture_encoder_attention, draw_sampling_points, nearest_queries)
from efficient_detr_mm.visualization.inputs import (  # noqa: E402
    build_eval_model, load_image)
# isort: on


def parse_args():
    parser = argparse.ArgumentParser(
        description='KDA vs MSDA sampling points of chosen encoder queries')
    parser.add_argument('config', help='a Lite DETR (or any deformable) '
                        'detector config')
    parser.add_argument('checkpoint', nargs='?', help='optional weights')
    parser.add_argument('--compare-config',
                        help='second detector drawn next to the first, '
                        'e.g. the MSDA baseline')
    parser.add_argument('--compare-checkpoint', help='its weights')
    parser.add_argument('--img', required=True, help='input image')
    parser.add_argument('--out', required=True, help='output PNG')
    parser.add_argument(
        '--points',
        type=float,
        nargs='+',
        help='query pixels x1 y1 x2 y2 ... in the network input '
        '(default: centre and two quarter points)')
    parser.add_argument('--layer', type=int, default=-1,
                        help='encoder layer (default: last)')
    parser.add_argument('--json', help='also write the points / weights')
    parser.add_argument('--device', default='cpu')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override settings of the first config, key=value')
    return parser.parse_args()


def prepare(cfg: Config, model, img: str):
    """The image through the config's test pipeline and preprocessor."""
    _, data = load_image(cfg, model, img)
    return data['inputs'], data['data_samples']


def display_image(model, inputs, sample):
    """The (resized, unpadded) network input as RGB uint8."""
    h, w = sample.img_shape
    mean = model.data_preprocessor.mean.detach().cpu().view(3, 1, 1)
    std = model.data_preprocessor.std.detach().cpu().view(3, 1, 1)
    rgb = (inputs[0].cpu() * std + mean)[:, :h, :w]
    if not getattr(model.data_preprocessor, '_channel_conversion', False):
        rgb = rgb.flip(0)  # BGR input: show RGB
    return rgb.clamp(0, 255).byte().permute(1, 2, 0).numpy()


def panel(name, res, queries):
    return dict(
        name=name,
        reference=res['reference_points'][0, queries, 0, :2].cpu(),
        locations=res['locations'][0, queries].cpu(),
        weights=res['weights'][0, queries].cpu())


def main():
    args = parse_args()
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    specs = [(cfg, args.checkpoint)]
    if args.compare_config:
        specs.append((Config.fromfile(args.compare_config),
                      args.compare_checkpoint))
    panels, image, pad_shape, dump = [], None, None, []
    for spec_cfg, ckpt in specs:
        model = build_eval_model(spec_cfg, ckpt, args.device)
        inputs, samples = prepare(spec_cfg, model, args.img)
        res = capture_encoder_attention(model, inputs, samples, args.layer)
        ph, pw = samples[0].batch_input_shape
        if image is None:
            image = display_image(model, inputs, samples[0])
            pad_shape = (ph, pw)
            h, w = samples[0].img_shape
            pts = args.points or [w / 2, h / 2, w / 4, h / 4, 3 * w / 4,
                                  3 * h / 4]
            if len(pts) % 2:
                raise ValueError('--points needs x y pairs')
            pixels = torch.tensor(pts, dtype=torch.float32).view(-1, 2)
        norm = pixels / torch.tensor([pw, ph], dtype=torch.float32)
        queries = nearest_queries(res['reference_points'].cpu(), norm)
        attn = model.encoder.layers[args.layer].self_attn
        name = (f'{osp.basename(spec_cfg.filename)}\n'
                f'{type(attn).__name__}, encoder layer {args.layer}')
        panels.append(panel(name, res, queries))
        dump.append(
            dict(
                config=spec_cfg.filename,
                attention=type(attn).__name__,
                queries=queries.tolist(),
                reference=panels[-1]['reference'].tolist(),
                locations=panels[-1]['locations'].tolist(),
                weights=panels[-1]['weights'].tolist()))
    draw_sampling_points(
        image,
        panels,
        args.out,
        pad_shape,
        title='sampling points (marker per level, area ~ weight)')
    print(f'wrote {args.out}')
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(dump, f)


if __name__ == '__main__':
    main()
