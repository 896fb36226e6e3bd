"""The embedded-default demo: train a tiny DINO on synthetic shapes (CPU).

    python projects/shapes/demo.py [--config CFG] [--epochs N] [--work-dir D]

1. generates the synthetic-shapes dataset under data/shapes if missing;
2. evaluates COCO bbox mAP on the val split at initialisation;
3. trains with mmengine's Runner (logs to the work dir);
4. evaluates again and prints both results side by side, with where the
   work dir, log and checkpoint are;
5. draws the trained model's detections on a few val images into one
   picture (the inferencer of demo/image_demo.py) and prints its path.
"""
import argparse
import json
import os
import os.path as osp
import sys
import time
from typing import List, Optional

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, REPO)

DEFAULT_CFG = 'configs/dino/dino-4scale_r18-tiny_1xb4-12e_shapes.py'


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--config', default=DEFAULT_CFG)
    p.add_argument('--epochs', type=int, default=4,
                   help='training epochs (overrides the config\'s '
                   'max_epochs; 4 fit the 15-minute budget on 2 CPU cores)')
    p.add_argument('--work-dir', default='work_dirs/shapes_demo')
    p.add_argument('--data-root', default='data/shapes')
    p.add_argument('--num-train', type=int, default=800)
    p.add_argument('--num-val', type=int, default=100)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--num-vis', type=int, default=4,
                   help='val images in the detections picture')
    p.add_argument('--pred-score-thr', type=float, default=0.1,
                   help='score threshold of the boxes drawn (the tiny '
                   'model\'s scores stay low after a short training)')
    p.add_argument('--max-per-image', type=int, default=5,
                   help='draw at most this many best boxes per image')
    return p.parse_args()


def draw_val_detections(cfg,
                        checkpoint: str,
                        out_file: str,
                        num_images: int = 4,
                        pred_score_thr: float = 0.1,
                        max_per_image: Optional[int] = 5) -> List[int]:
    """Draw the detections of ``checkpoint`` (a model of ``cfg``) on the
    first ``num_images`` val images that contain objects, side by side, into
    ``out_file``, with the inferencer of ``demo/image_demo.py``: per image
    the ``max_per_image`` best boxes with score >= ``pred_score_thr``.

    Returns:
        list[int]: boxes drawn per image.
    """
    from efficient_detr_mm.visualization.detections import (EffDetInferencer,
                                                            detections_picture)
    dataset = cfg.val_dataloader.dataset
    with open(osp.join(dataset.data_root, dataset.ann_file)) as f:
        coco = json.load(f)
    with_objects = {a['image_id'] for a in coco['annotations']}
    names = [
        im['file_name'] for im in sorted(coco['images'], key=lambda x: x['id'])
        if im['id'] in with_objects
    ][:num_images]
    if not names:
        raise ValueError(f'no val image with objects in {dataset.data_root}')
    images = [
        osp.join(dataset.data_root, dataset.data_prefix.img, n)
        for n in names
    ]
    inferencer = EffDetInferencer(
        cfg, checkpoint, device='cpu', show_progress=False)
    return detections_picture(inferencer, images, out_file, pred_score_thr,
                              max_per_image)


def main():
    args = parse_args()
    os.chdir(REPO)
    from mmengine.config import Config
    from mmengine.runner import Runner

    from efficient_detr_mm.datasets import make_shapes_dataset, use_shapes_root

    t0 = time.time()
    print(f'[1/5] synthetic shapes dataset in {args.data_root} '
          f'({args.num_train} train / {args.num_val} val images)')
    make_shapes_dataset(args.data_root, num_train=args.num_train,
                        num_val=args.num_val, seed=args.seed)

    cfg = use_shapes_root(Config.fromfile(args.config), args.data_root)
    if args.epochs is not None:
        cfg.train_cfg.max_epochs = args.epochs
        cfg.param_scheduler[0].end = args.epochs
        # lr drop (x0.1) for the last epoch
        cfg.param_scheduler[0].milestones = [max(1, args.epochs - 1)]
    # evaluation happens once, below, after training
    cfg.train_cfg.val_begin = cfg.train_cfg.max_epochs + 1
    cfg.default_hooks.checkpoint.interval = cfg.train_cfg.max_epochs
    cfg.default_hooks.visualization.draw = False
    cfg.work_dir = args.work_dir
    cfg.randomness = dict(seed=args.seed)

    runner = Runner.from_cfg(cfg)
    print(f'[2/5] evaluating the model at initialisation '
          f'({time.time() - t0:.0f}s)')
    runner.model.init_weights()
    before = runner.val()
    print(f'[3/5] training {cfg.train_cfg.max_epochs} epochs on CPU '
          f'({time.time() - t0:.0f}s); progress in {runner.log_dir}')
    runner.train()
    print(f'[4/5] evaluating the trained model ({time.time() - t0:.0f}s)')
    after = runner.val()
    with open(osp.join(runner.work_dir, 'last_checkpoint')) as f:
        ckpt = f.read().strip()
    print(f'[5/5] drawing detections on {args.num_vis} val images '
          f'({time.time() - t0:.0f}s)')
    picture = osp.abspath(osp.join(runner.work_dir, 'val_detections.png'))
    drawn = draw_val_detections(cfg, ckpt, picture, args.num_vis,
                                args.pred_score_thr, args.max_per_image)

    keys = ['coco/bbox_mAP', 'coco/bbox_mAP_50', 'coco/bbox_mAP_75',
            'coco/bbox_mAP_s', 'coco/bbox_mAP_m', 'coco/bbox_mAP_l']
    print('\n' + '=' * 64)
    print(f'{"val metric":<22}{"at init":>12}{"trained":>12}')
    for k in keys:
        print(f'{k:<22}{before[k]:>12.3f}{after[k]:>12.3f}')
    print('=' * 64)
    print(f'config     : {args.config}')
    print(f'work dir   : {osp.abspath(runner.work_dir)}')
    print(f'log        : {osp.abspath(runner.log_dir)}')
    print(f'checkpoint : {ckpt}')
    print(f'detections : {picture} ({sum(drawn)} boxes with score >= '
          f'{args.pred_score_thr}, at most {args.max_per_image} per image, '
          f'on {len(drawn)} val images)')
    print(f'total time : {time.time() - t0:.0f}s')
    if not after['coco/bbox_mAP'] > before['coco/bbox_mAP']:
        sys.exit('training did not improve val mAP')


if __name__ == '__main__':
    main()
