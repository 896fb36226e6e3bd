"""The synthetic-shapes generator and its use through mmdet unchanged."""
import hashlib
import json
import os
import os.path as osp

import numpy as np
import pytest
from helpers import load_config
from mmdet.datasets import CocoDataset
from mmdet.evaluation import CocoMetric

from efficient_detr_mm.datasets import (SHAPES_CLASSES, generate_split,
                                        make_shapes_dataset, use_shapes_root)


def _digest(root):
    h = hashlib.sha256()
    for dirpath, _, files in sorted(os.walk(root)):
        for f in sorted(files):
            if f.startswith('.'):
                continue
            with open(osp.join(dirpath, f), 'rb') as fh:
                h.update(f.encode() + fh.read())
    return h.hexdigest()


def test_deterministic_from_seed(tmp_path):
    a, b, c = (str(tmp_path / n) for n in 'abc')
    for root, seed in ((a, 3), (b, 3), (c, 4)):
        generate_split(root, 'val', 6, (64, 96), seed=seed)
    assert _digest(a) == _digest(b)
    assert _digest(a) != _digest(c)


@pytest.fixture(scope='module')
def val_json(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('stats'))
    ann = generate_split(root, 'val', 120, (160, 224), seed=0)
    with open(ann) as f:
        return root, ann, json.load(f)


def test_content_properties(val_json):
    _, _, coco = val_json
    assert len(coco['categories']) >= 5
    assert [c['name'] for c in coco['categories']] == list(SHAPES_CLASSES)
    areas = np.array([a['area'] for a in coco['annotations']])
    # COCO size buckets all populated
    assert (areas < 32**2).sum() > 10
    assert ((areas >= 32**2) & (areas < 96**2)).sum() > 10
    assert (areas >= 96**2).sum() > 5
    per_img = np.bincount([a['image_id'] for a in coco['annotations']],
                          minlength=len(coco['images']) + 1)[1:]
    assert (per_img == 0).sum() >= 1  # images with no objects
    assert per_img.max() >= 4  # several objects per image
    assert sum(a['occluded'] for a in coco['annotations']) > 10
    sizes = {(i['height'], i['width']) for i in coco['images']}
    assert len(sizes) > 10  # varying sizes
    for a in coco['annotations']:
        img = coco['images'][a['image_id'] - 1]
        x, y, w, h = a['bbox']
        assert 0 <= x and 0 <= y and x + w <= img['width'] and \
            y + h <= img['height']
        assert a['area'] <= w * h
    labels = {a['category_id'] for a in coco['annotations']}
    assert labels == set(range(1, len(SHAPES_CLASSES) + 1))


def test_textured_background(val_json):
    import cv2
    root, _, coco = val_json
    empty = [i for i in coco['images']
             if not any(a['image_id'] == i['id'] for a in coco['annotations'])]
    img = cv2.imread(osp.join(root, 'val', empty[0]['file_name']))
    assert img.std() > 5  # not a flat colour


def test_mmdet_dataset_and_metric_unchanged(val_json):
    root, ann, coco = val_json
    cfg = load_config('dino/dino-4scale_r18-tiny_1xb4-12e_shapes.py')
    ds_cfg = cfg.val_dataloader.dataset
    ds = CocoDataset(
        data_root=root + '/',
        ann_file=ann,
        data_prefix=dict(img='val/'),
        metainfo=ds_cfg.metainfo,
        test_mode=True,
        pipeline=ds_cfg.pipeline)
    assert len(ds) == len(coco['images'])
    assert ds.metainfo['classes'] == SHAPES_CLASSES
    item = ds[0]
    assert item['inputs'].shape[0] == 3
    # ground truth given as predictions evaluates to AP 1.0
    metric = CocoMetric(ann_file=ann, metric='bbox')
    metric.dataset_meta = ds.metainfo
    import torch
    for i, img in enumerate(coco['images']):
        anns = [a for a in coco['annotations'] if a['image_id'] == img['id']]
        b = torch.tensor([[x, y, x + w, y + h]
                          for x, y, w, h in (a['bbox'] for a in anns)],
                         dtype=torch.float32).reshape(-1, 4)
        metric.process({}, [
            dict(
                img_id=img['id'],
                ori_shape=(img['height'], img['width']),
                pred_instances=dict(
                    bboxes=b,
                    scores=torch.ones(len(anns)),
                    labels=torch.tensor(
                        [a['category_id'] - 1 for a in anns],
                        dtype=torch.long)))
        ])
    res = metric.compute_metrics(metric.results)
    assert res['bbox_mAP'] == pytest.approx(1.0)
    assert res['bbox_mAP_s'] == pytest.approx(1.0)
    assert res['bbox_mAP_l'] == pytest.approx(1.0)


def test_make_dataset_idempotent_and_validates(tmp_path):
    root = str(tmp_path / 's')
    files = make_shapes_dataset(root, num_train=3, num_val=2, img_size=64)
    mtime = os.path.getmtime(files['train'])
    assert make_shapes_dataset(root, num_train=3, num_val=2,
                               img_size=64) == files
    assert os.path.getmtime(files['train']) == mtime
    make_shapes_dataset(root, num_train=4, num_val=2, img_size=64, force=True)
    with open(files['train']) as f:
        assert len(json.load(f)['images']) == 4
    with pytest.raises(ValueError, match='split'):
        generate_split(root, 'bogus', 1)
    with pytest.raises(ValueError, match='img_size'):
        generate_split(root, 'val', 1, img_size=(10, 8))


def test_use_shapes_root_points_loaders_and_evaluators():
    cfg = load_config('detr/detr_r18-tiny_1xb4-12e_shapes.py')
    use_shapes_root(cfg, '/data/s', num_workers=0)
    for split in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        assert cfg[split].dataset.data_root == '/data/s/'
        assert cfg[split].num_workers == 0
        assert cfg[split].persistent_workers is False
    assert cfg.train_dataloader.dataset.ann_file == \
        'annotations/instances_train.json'
    assert cfg.val_dataloader.dataset.data_prefix.img == 'val/'
    assert cfg.test_evaluator.ann_file == \
        '/data/s/annotations/instances_val.json'
    # evaluating the training images: val/test loaders and evaluators only
    use_shapes_root(cfg, '/data/s/', eval_split='train')
    assert cfg.train_dataloader.dataset.data_prefix.img == 'train/'
    for split in ('val_dataloader', 'test_dataloader'):
        assert cfg[split].dataset.ann_file == \
            'annotations/instances_train.json'
        assert cfg[split].dataset.data_prefix.img == 'train/'
    for ev in ('val_evaluator', 'test_evaluator'):
        assert cfg[ev].ann_file == '/data/s/annotations/instances_train.json'
    with pytest.raises(ValueError, match='eval_split'):
        use_shapes_root(cfg, '/data/s', eval_split='test')
