"""Generate the synthetic-shapes COCO dataset (the embedded default).

    python tools/dataset_converters/make_shapes.py [--out data/shapes]
        [--num-train 800] [--num-val 100] [--img-size 160 224] [--seed 0]

The same arguments always give the same files; an existing dataset made with
the same arguments is kept (use --force to rewrite it).
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.join(osp.dirname(osp.abspath(__file__)), '..', '..'))
from efficient_detr_mm.datasets.shapes import make_shapes_dataset  # noqa


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--out', default='data/shapes', help='dataset root')
    p.add_argument('--num-train', type=int, default=800)
    p.add_argument('--num-val', type=int, default=100)
    p.add_argument(
        '--img-size',
        type=int,
        nargs='+',
        default=[160, 224],
        help='image side, or min and max side (sizes vary per image)')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--max-objects', type=int, default=6)
    p.add_argument('--empty-prob', type=float, default=0.05)
    p.add_argument('--force', action='store_true', help='rewrite')
    return p.parse_args()


def main():
    args = parse_args()
    if len(args.img_size) not in (1, 2):
        sys.exit('--img-size takes one side or a min and a max side')
    size = args.img_size * 2 if len(args.img_size) == 1 else args.img_size
    files = make_shapes_dataset(
        args.out,
        num_train=args.num_train,
        num_val=args.num_val,
        img_size=size,
        seed=args.seed,
        max_objects=args.max_objects,
        empty_prob=args.empty_prob,
        force=args.force)
    for split, f in files.items():
        print(f'{split}: {f}')


if __name__ == '__main__':
    main()
