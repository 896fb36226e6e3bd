"""Generate the synthetic-shapes COCO dataset (the embedded default).

    python tools/dataset_converters/make_shapes.py [--out data/shapes]
        [--num-train 800] [--num-val 100] [--img-size 160 224] [--seed 0]

The same arguments always give the same files; an existing dataset made with
the same arguments is kept. Any other dataset under --out is never
overwritten: the tool refuses unless --force is given.
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.join(osp.dirname(osp.abspath(__file__)), '..', '..'))
from efficient_detr_mm.datasets.shapes import make_shapes_dataset  # noqa


def _int_at_least(least: int):
    """argparse type: an integer >= ``least``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f'{text!r} is not an integer') from None
        if value < least:
            raise argparse.ArgumentTypeError(
                f'must be at least {least}, got {value}')
        return value

    return parse


def _probability(text: str) -> float:
    """argparse type: a float in [0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'{text!r} is not a number') from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f'must be in [0, 1], got {value}')
    return value


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--out', default='data/shapes', help='dataset root')
    p.add_argument('--num-train', type=_int_at_least(1), default=800)
    p.add_argument('--num-val', type=_int_at_least(1), default=100)
    p.add_argument(
        '--img-size',
        type=_int_at_least(32),
        nargs='+',
        default=[160, 224],
        help='image side, or min and max side (sizes vary per image)')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--max-objects', type=_int_at_least(1), default=6)
    p.add_argument('--empty-prob', type=_probability, default=0.05)
    p.add_argument(
        '--force',
        action='store_true',
        help='rewrite a dataset already under --out (otherwise refused '
        'unless it was made with the same arguments)')
    return p.parse_args()


def main():
    args = parse_args()
    if len(args.img_size) not in (1, 2):
        sys.exit('--img-size takes one side or a min and a max side')
    size = args.img_size * 2 if len(args.img_size) == 1 else args.img_size
    try:
        files = make_shapes_dataset(
            args.out,
            num_train=args.num_train,
            num_val=args.num_val,
            img_size=size,
            seed=args.seed,
            max_objects=args.max_objects,
            empty_prob=args.empty_prob,
            force=args.force)
    except FileExistsError as err:
        sys.exit(f'make_shapes.py: {err}')
    for split, f in files.items():
        print(f'{split}: {f}')


if __name__ == '__main__':
    main()
