"""Overlay SMCA's spatial prior on an image: for the top-scoring queries,
each head's Gaussian-like map G of one decoder layer (and their mean), with
the query's predicted box.

Example::

    python tools/analysis_tools/visualize_smca.py \\
        configs/smca/smca_r50_8xb2-50e_coco.py smca_r50_50e.pth \\
        --img demo.jpg --out smca_maps.png --topk 4

Without a checkpoint the model keeps its initial weights (the maps are then
the learned-anchor priors at initialisation: sigma = 2 feature cells).
"""
import argparse
import json
import os.path as osp
import sys

from mmengine.config import Config, DictAction
from mmengine.registry import init_default_scope

# isort: off
sys.path.insert(0, osp.join(osp.dirname(osp.abspath(__file__)), '..', '..'))
import efficient_detr_mm  # noqa: E402,F401
from efficient_detr_mm.visualization.smca import (  # noqa: E402
    draw_smca_maps, smca_gaussian_maps)
from efficient_detr_mm.visualization.inputs import (  # noqa: E402
    build_eval_model, load_image)
# isort: on


def parse_args():
    parser = argparse.ArgumentParser(
        description='Visualise SMCA Gaussian maps and boxes per query')
    parser.add_argument('config', help='an SMCADETR config')
    parser.add_argument('checkpoint', nargs='?', help='optional weights')
    parser.add_argument('--img', required=True, help='input image')
    parser.add_argument('--out', required=True, help='output PNG')
    parser.add_argument('--topk', type=int, default=4,
                        help='queries to show (highest class score)')
    parser.add_argument('--layer', type=int, default=-1,
                        help='decoder layer (default: last)')
    parser.add_argument('--level', type=int, default=None,
                        help='feature level for multi-scale models '
                        '(default: the stride-32 one)')
    parser.add_argument('--json', help='also write boxes / scores here')
    parser.add_argument('--device', default='cpu')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config settings, key=value')
    return parser.parse_args()


def build_model(cfg: Config, checkpoint, device: str):
    model = build_eval_model(cfg, checkpoint, device)
    if not hasattr(model.decoder, 'layers') or not hasattr(
            model.decoder.layers[0], 'gaussian'):
        raise ValueError(f'{cfg.filename}: model type {cfg.model.type} has '
                         'no SMCA decoder (use an smca config)')
    return model


def main():
    args = parse_args()
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    model = build_model(cfg, args.checkpoint, args.device)
    _, data = load_image(cfg, model, args.img)
    inputs, samples = data['inputs'], data['data_samples']
    res = smca_gaussian_maps(model, inputs, samples, layer=args.layer,
                             level=args.level, topk=args.topk)
    # the network-input image (resized, unpadded) in RGB for display
    img = samples[0].img_shape
    mean = model.data_preprocessor.mean.detach().cpu().view(3, 1, 1)
    std = model.data_preprocessor.std.detach().cpu().view(3, 1, 1)
    rgb = (inputs[0].cpu() * std + mean)[:, :img[0], :img[1]]
    if not getattr(model.data_preprocessor, '_channel_conversion', False):
        rgb = rgb.flip(0)  # inputs are BGR: show RGB
    image = rgb.clamp(0, 255).byte().permute(1, 2, 0).numpy()
    classes = cfg.get('test_dataloader', {}).get('dataset', {}).get(
        'metainfo', {}).get('classes')
    names = [
        classes[int(lb)] if classes else str(int(lb))
        for lb in res['labels'][0]
    ]
    draw_smca_maps(
        image,
        res['maps'][0].numpy(),
        res['boxes'][0].numpy(),
        args.out,
        scores=res['scores'][0].tolist(),
        labels=names,
        pad_shape=samples[0].batch_input_shape,
        title=(f'{osp.basename(args.config)}: decoder layer {args.layer}, '
               f'stride {res["stride"]}'))
    print(f'wrote {args.out}')
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(
                dict(
                    queries=res['queries'][0].tolist(),
                    boxes_xyxy=res['boxes'][0].tolist(),
                    scores=res['scores'][0].tolist(),
                    labels=names,
                    stride=res['stride'],
                    spatial_shape=list(res['spatial_shape'])),
                f,
                indent=1)


if __name__ == '__main__':
    main()
