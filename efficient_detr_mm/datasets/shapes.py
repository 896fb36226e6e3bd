"""Synthetic-shapes detection data in COCO format: the embedded default.

Every image is drawn deterministically from ``(seed, split, index)``: a
textured, noisy background and a few filled shapes of random colour, size and
rotation that may occlude each other.  Boxes, areas and the COCO size
buckets are computed from the pixels that remain *visible* after occlusion,
so an object's ``area`` is what ``CocoMetric`` uses for APs/APm/APl.

The output works with mmdet's ``CocoDataset`` and ``CocoMetric`` unchanged::

    <root>/annotations/instances_{train,val}.json
    <root>/{train,val}/000000.jpg ...
"""
import json
import os
import os.path as osp
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

SHAPES_CLASSES = ('circle', 'square', 'triangle', 'star', 'hexagon', 'cross')
# colours used by the visualiser, one per class (RGB)
SHAPES_PALETTE = [(220, 20, 60), (0, 128, 255), (0, 200, 0), (255, 200, 0),
                  (160, 32, 240), (0, 220, 220)]

#: COCO's size buckets are by area: small < 32**2 <= medium < 96**2 <= large
_SIDE_RANGES = {'small': (10, 30), 'medium': (40, 90), 'large': (110, 170)}
_SPLIT_OFFSET = {'train': 0, 'val': 1_000_003, 'test': 2_000_003}
_STAMP = '.shapes_params.json'


def _polygon(cls: str, cx: float, cy: float, r: float,
             angle: float) -> np.ndarray:
    """Vertices (K, 2) of a shape of circumradius ``r`` rotated by
    ``angle``."""
    if cls == 'square':
        t = np.arange(4) * np.pi / 2 + np.pi / 4
        rad = np.full(4, r)
    elif cls == 'triangle':
        t = np.arange(3) * 2 * np.pi / 3
        rad = np.full(3, r)
    elif cls == 'hexagon':
        t = np.arange(6) * np.pi / 3
        rad = np.full(6, r)
    elif cls == 'star':
        t = np.arange(10) * np.pi / 5
        rad = np.where(np.arange(10) % 2 == 0, r, 0.45 * r)
    elif cls == 'cross':
        # a plus sign: 12 vertices, arm half-width 0.3 r
        w = 0.3
        pts = np.array([[w, 1], [w, w], [1, w], [1, -w], [w, -w], [w, -1],
                        [-w, -1], [-w, -w], [-1, -w], [-1, w], [-w, w],
                        [-w, 1]]) * r
        c, s = np.cos(angle), np.sin(angle)
        rot = pts @ np.array([[c, s], [-s, c]])
        return rot + np.array([cx, cy])
    else:
        raise ValueError(f'unknown shape class {cls!r}')
    t = t + angle
    return np.stack([cx + rad * np.cos(t), cy + rad * np.sin(t)], axis=1)


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Textured background: colour gradient, stripes or blobs, and noise."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    c0 = rng.uniform(40, 200, size=3)
    c1 = rng.uniform(40, 200, size=3)
    a = rng.uniform(0, 2 * np.pi)
    g = (np.cos(a) * xx / w + np.sin(a) * yy / h + 1) / 2
    img = c0 * (1 - g[..., None]) + c1 * g[..., None]
    kind = rng.integers(3)
    if kind == 0:  # stripes
        f = rng.uniform(0.05, 0.3)
        b = rng.uniform(0, 2 * np.pi)
        img += 25 * np.sin(f * (np.cos(b) * xx + np.sin(b) * yy))[..., None]
    elif kind == 1:  # soft blobs
        for _ in range(rng.integers(3, 8)):
            bx, by = rng.uniform(0, w), rng.uniform(0, h)
            s = rng.uniform(8, 40)
            d = np.exp(-((xx - bx)**2 + (yy - by)**2) / (2 * s * s))
            img += rng.uniform(-50, 50, size=3) * d[..., None]
    img += rng.normal(0, rng.uniform(4, 15), size=img.shape)
    return img


def _draw_image(rng: np.random.Generator, h: int, w: int,
                max_objects: int, empty_prob: float
                ) -> Tuple[np.ndarray, List[Dict]]:
    img = _background(rng, h, w)
    owner = np.full((h, w), -1, dtype=np.int32)  # visible object per pixel
    objs = []
    n = 0 if rng.random() < empty_prob else int(rng.integers(1, max_objects +
                                                             1))
    max_side = min(h, w) * 0.8
    for k in range(n):
        bucket = rng.choice(['small', 'medium', 'large'], p=[0.4, 0.4, 0.2])
        lo, hi = _SIDE_RANGES[bucket]
        hi = min(hi, max_side)
        lo = min(lo, hi)
        side = rng.uniform(lo, hi)
        r = side / 2
        cx, cy = rng.uniform(r * 0.5, w - r * 0.5), rng.uniform(
            r * 0.5, h - r * 0.5)
        label = int(rng.integers(len(SHAPES_CLASSES)))
        cls = SHAPES_CLASSES[label]
        mask = np.zeros((h, w), np.uint8)
        if cls == 'circle':
            cv2.ellipse(mask, (int(round(cx * 16)), int(round(cy * 16))),
                        (int(round(r * 16)), int(round(r * rng.uniform(
                            0.8, 1.0) * 16))),
                        float(rng.uniform(0, 180)), 0, 360, 1, -1,
                        cv2.LINE_8, 4)
        else:
            pts = _polygon(cls, cx, cy, r, rng.uniform(0, 2 * np.pi))
            cv2.fillPoly(mask, [np.round(pts * 16).astype(np.int32)], 1,
                         cv2.LINE_8, 4)
        m = mask.astype(bool)
        full_area = int(m.sum())
        if full_area == 0:
            continue
        colour = rng.uniform(0, 255, size=3)
        shade = rng.normal(0, 6, size=(h, w, 1))
        img[m] = (colour + shade[m])
        owner[m] = k
        objs.append(dict(k=k, label=label, full_area=full_area))
    img = np.clip(img, 0, 255).astype(np.uint8)
    anns = []
    for o in objs:
        vis = owner == o['k']
        area = int(vis.sum())
        if area < 0.4 * o['full_area'] or area < 16:
            continue  # mostly hidden: not annotated (and not drawn as fg)
        ys, xs = np.nonzero(vis)
        x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
        anns.append(
            dict(
                category_id=o['label'] + 1,
                bbox=[float(x0), float(y0),
                      float(x1 - x0),
                      float(y1 - y0)],
                area=float(area),
                iscrowd=0,
                occluded=bool(area < o['full_area'])))
    return img, anns


def generate_split(root: str,
                   split: str,
                   num_images: int,
                   img_size: Sequence[int] = (160, 224),
                   seed: int = 0,
                   max_objects: int = 6,
                   empty_prob: float = 0.05) -> str:
    """Write one split; return the path of its annotation file.

    Args:
        root (str): dataset root.
        split (str): 'train', 'val' or 'test'.
        num_images (int): number of images.
        img_size (int | (int, int)): image side, or the (min, max) range each
            image's height and width are drawn from (varying sizes exercise
            padding).
        seed (int): the whole split is a function of the seed.
        max_objects (int): most objects drawn in one image.
        empty_prob (float): probability of an image with no objects.
    """
    if split not in _SPLIT_OFFSET:
        raise ValueError(f'split must be one of {list(_SPLIT_OFFSET)}, '
                         f'got {split!r}')
    if isinstance(img_size, int):
        img_size = (img_size, img_size)
    lo, hi = int(img_size[0]), int(img_size[1])
    if not 32 <= lo <= hi:
        raise ValueError(f'img_size must satisfy 32 <= min <= max, got '
                         f'{img_size}')
    img_dir = osp.join(root, split)
    os.makedirs(img_dir, exist_ok=True)
    os.makedirs(osp.join(root, 'annotations'), exist_ok=True)
    images, annotations = [], []
    for i in range(num_images):
        rng = np.random.default_rng([seed, _SPLIT_OFFSET[split] + i])
        h, w = (int(v) for v in rng.integers(lo, hi + 1, size=2))
        img, anns = _draw_image(rng, h, w, max_objects, empty_prob)
        name = f'{i:06d}.jpg'
        cv2.imwrite(osp.join(img_dir, name), img[..., ::-1],
                    [cv2.IMWRITE_JPEG_QUALITY, 95])
        images.append(dict(id=i + 1, file_name=name, height=h, width=w))
        for a in anns:
            a.update(id=len(annotations) + 1, image_id=i + 1)
            annotations.append(a)
    coco = dict(
        info=dict(description=f'synthetic shapes ({split}, seed {seed})'),
        images=images,
        annotations=annotations,
        categories=[
            dict(id=i + 1, name=c, supercategory='shape')
            for i, c in enumerate(SHAPES_CLASSES)
        ])
    ann_file = osp.join(root, 'annotations', f'instances_{split}.json')
    with open(ann_file, 'w') as f:
        json.dump(coco, f)
    return ann_file


def make_shapes_dataset(root: str,
                        num_train: int = 800,
                        num_val: int = 100,
                        img_size: Sequence[int] = (160, 224),
                        seed: int = 0,
                        max_objects: int = 6,
                        empty_prob: float = 0.05,
                        force: bool = False) -> Dict[str, str]:
    """Generate train and val splits under ``root`` unless a dataset with the
    same parameters is already there (idempotent).

    A dataset (or any ``train/``, ``val/`` or ``annotations/`` content)
    under ``root`` that was not made with these parameters, or whose
    generation was interrupted, is never overwritten silently: that raises
    ``FileExistsError`` unless ``force=True``.

    Returns:
        dict: split name -> annotation file.
    """
    for name, value, least in (('num_train', num_train, 1),
                               ('num_val', num_val, 1),
                               ('max_objects', max_objects, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or \
                value < least:
            raise ValueError(f'{name} must be an integer >= {least}, got '
                             f'{value!r}')
    if not 0.0 <= empty_prob <= 1.0:
        raise ValueError(f'empty_prob must be in [0, 1], got {empty_prob!r}')
    params = dict(
        num_train=num_train,
        num_val=num_val,
        img_size=list(img_size) if not isinstance(img_size, int) else
        [img_size, img_size],
        seed=seed,
        max_objects=max_objects,
        empty_prob=empty_prob,
        version=1)
    stamp = osp.join(root, _STAMP)
    files = {
        s: osp.join(root, 'annotations', f'instances_{s}.json')
        for s in ('train', 'val')
    }
    old = None
    if osp.exists(stamp):
        with open(stamp) as f:
            old = json.load(f)
    if not force:
        if old == params and all(osp.exists(f) for f in files.values()):
            return files
        existing = [
            d for d in ('annotations', 'train', 'val')
            if osp.isdir(osp.join(root, d)) and os.listdir(osp.join(root, d))
        ]
        if existing:
            why = ('an interrupted generation or not made by this tool'
                   if old is None else f'made with {old}')
            raise FileExistsError(
                f'{root} already holds a dataset ({", ".join(existing)}; '
                f'{why}), not the one asked for ({params}); refusing to '
                'overwrite it: pass --force (force=True) to rewrite it or '
                'choose another output directory')
    os.makedirs(root, exist_ok=True)
    if osp.exists(stamp):
        os.remove(stamp)  # a half-written dataset is never taken as done
    for split, n in (('train', num_train), ('val', num_val)):
        generate_split(root, split, n, img_size, seed, max_objects,
                       empty_prob)
    with open(stamp, 'w') as f:
        json.dump(params, f)
    return files


def use_shapes_root(cfg,
                    root: str,
                    eval_split: str = 'val',
                    num_workers: Optional[int] = None):
    """Point a ``*_shapes.py`` config (an mmengine ``Config``) at the dataset
    generated under ``root``: training on its train split, validation, test
    and the evaluators on ``eval_split`` ('train' evaluates what a model has
    memorised).  ``num_workers``: also set the dataloaders' workers (0 turns
    off persistent workers).  Returns ``cfg``, changed in place."""
    if eval_split not in ('train', 'val'):
        raise ValueError(f"eval_split must be 'train' or 'val', got "
                         f'{eval_split!r}')
    root = root.rstrip('/') + '/'
    ann = f'annotations/instances_{eval_split}.json'
    for split in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[split].dataset.data_root = root
        if num_workers is not None:
            cfg[split].num_workers = num_workers
            cfg[split].persistent_workers = num_workers > 0
        if split != 'train_dataloader':
            cfg[split].dataset.ann_file = ann
            cfg[split].dataset.data_prefix = dict(img=f'{eval_split}/')
    for ev in ('val_evaluator', 'test_evaluator'):
        cfg[ev].ann_file = root + ann
    return cfg
