"""Colour every encoder token by its ACT cluster, for one layer and head.

    python tools/analysis_tools/visualize_act_clusters.py CONFIG CHECKPOINT \
        IMAGE [--layer 0] [--head 0] [--num-hashes L] [--seed 0] \
        [--out act_clusters.png]

CONFIG is an ACT config (configs/act/*.py); CHECKPOINT may be a plain DETR
checkpoint of the same architecture (ACT adds no parameter).  The picture
shows the (resized) input image with one colour per cluster; the number of
clusters (prototypes) is printed.
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.join(osp.dirname(osp.abspath(__file__)), '..', '..'))


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('config')
    p.add_argument('checkpoint', help="'none' for random weights")
    p.add_argument('image')
    p.add_argument('--layer', type=int, default=0)
    p.add_argument('--head', type=int, default=0)
    p.add_argument('--num-hashes', type=int, default=None,
                   help='override the config\'s L')
    p.add_argument('--seed', type=int, default=0,
                   help='hash seed (reproducible picture)')
    p.add_argument('--alpha', type=float, default=0.55)
    p.add_argument('--out', default='act_clusters.png')
    return p.parse_args()


def main():
    args = parse_args()
    import mmcv
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.config import Config
    from mmengine.dataset import Compose

    import efficient_detr_mm  # noqa: F401
    from efficient_detr_mm.runtime import load_checkpoint
    from efficient_detr_mm.visualization.act_clusters import (capture_clusters,
                                                              render_clusters)
    register_all_modules()

    cfg = Config.fromfile(args.config)
    cfg.model.backbone.init_cfg = None
    act_cfg = dict(cfg.model.get('act_cfg') or {})
    act_cfg['seed'] = args.seed
    if args.num_hashes is not None:
        act_cfg['num_hashes'] = args.num_hashes
    cfg.model.act_cfg = act_cfg
    model = MODELS.build(cfg.model)
    if args.checkpoint != 'none':
        load_checkpoint(model, args.checkpoint, map_location='cpu')
    model.eval()

    # the test pipeline without annotation loading
    steps = [
        s for s in cfg.test_dataloader.dataset.pipeline
        if s['type'] != 'LoadAnnotations'
    ]
    data = Compose(steps)(dict(img_path=args.image, img_id=0))
    batch = model.data_preprocessor(
        dict(inputs=[data['inputs']], data_samples=[data['data_samples']]),
        False)
    ids, num = capture_clusters(model, batch, args.layer, args.head)
    image = data['inputs'].permute(1, 2, 0).numpy()  # BGR, resized
    pic = render_clusters(image, ids, alpha=args.alpha)
    mmcv.imwrite(pic, args.out)
    print(f'layer {args.layer} head {args.head}: {num} clusters for '
          f'{ids.size} tokens ({ids.shape[0]}x{ids.shape[1]}) -> {args.out}')


if __name__ == '__main__':
    main()
