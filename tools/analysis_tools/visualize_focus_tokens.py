"""Draw, per feature level, which tokens Focus-DETR's Foreground Token
Selector keeps and how many encoder layers update each of them (like Fig. 7
of the paper).

Example::

    python tools/analysis_tools/visualize_focus_tokens.py \\
        configs/focus_detr/focus-detr-4scale_r50_8xb2-12e_coco.py \\
        focus_detr_r50_12e.pth --img demo.jpg --out focus_tokens.png

Without a checkpoint the model keeps its initial weights (useful only to
check the tool and the token budget).
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
from efficient_detr_mm.visualization.focus_tokens import (  # noqa: E402
    draw_focus_tokens, focus_token_maps)
from efficient_detr_mm.visualization.inputs import (  # noqa: E402
    build_eval_model, load_image)
# isort: on


def parse_args():
    parser = argparse.ArgumentParser(
        description='Visualise the tokens kept by the Focus-DETR selector')
    parser.add_argument('config', help='a FocusDETR config')
    parser.add_argument('checkpoint', nargs='?', help='optional weights')
    parser.add_argument('--img', required=True, help='input image')
    parser.add_argument('--out', required=True, help='output PNG')
    parser.add_argument(
        '--json', help='also write per-level kept-token counts here')
    parser.add_argument('--device', default='cpu')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config settings, key=value')
    return parser.parse_args()


def build_model(cfg: Config, checkpoint, device: str):
    model = build_eval_model(cfg, checkpoint, device)
    if type(model).__name__ != 'FocusDETR' and not hasattr(
            model, 'select_tokens'):
        raise ValueError(f'{cfg.filename}: model type {cfg.model.type} has '
                         'no Foreground Token Selector (use a focus_detr '
                         'config)')
    return model


def main():
    args = parse_args()
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    model = build_model(cfg, args.checkpoint, args.device)
    data, batch = load_image(cfg, model, args.img)
    maps = focus_token_maps(model, batch['inputs'], batch['data_samples'])

    # the network-input image (resized, before padding), RGB
    img = data['inputs'].permute(1, 2, 0).numpy()
    if model.data_preprocessor._channel_conversion:
        img = img[..., ::-1]  # the pipeline's images are BGR
    h, w = batch['data_samples'][0].img_shape
    img = img[:h, :w].copy()
    pad_shape = batch['data_samples'][0].batch_input_shape
    strides = getattr(model.fts_loss, 'strides', None)
    draw_focus_tokens(
        img,
        maps['counts'][0],
        maps['num_layers'],
        args.out,
        pad_shape=pad_shape,
        strides=strides,
        title=osp.basename(args.img))
    summary = dict(
        image=args.img,
        input_shape=[int(h), int(w)],
        spatial_shapes=maps['spatial_shapes'].tolist(),
        kept_per_level=[int((c > 0).sum()) for c in maps['counts'][0]],
        tokens_per_level=[int(c.size) for c in maps['counts'][0]],
        updates_per_layer=[
            int(sum(int((c > layer).sum()) for c in maps['counts'][0]))
            for layer in range(maps['num_layers'])
        ])
    print(json.dumps(summary))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(summary, f, indent=1)
    print(f'saved {args.out}')


if __name__ == '__main__':
    with torch.no_grad():
        main()
