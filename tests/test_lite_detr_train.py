"""The tiny Lite-DINO and Lite-Deformable-DETR configs train (loss falls)
and evaluate through tools/train.py and tools/test.py (one config per
family; the other shapes configs are build-checked by test_configs.py)."""
import glob
import json
import os.path as osp

import pytest
from helpers import python_tool, shapes_options

CONFIGS = [
    'configs/lite_detr/lite-dino-h3l1-3blk_r18-tiny_1xb4-12e_shapes.py',
    'configs/lite_detr/'
    'lite-deformable-detr-h3l1-3blk_r18-tiny_1xb4-12e_shapes.py',
]
EPOCHS = 3


def _losses(work_dir):
    """Training losses, in order, from the run's json scalars log."""
    logs = sorted(glob.glob(osp.join(work_dir, '*', 'vis_data',
                                     'scalars.json')))
    assert logs, f'no scalars.json under {work_dir}'
    with open(logs[-1]) as f:
        records = [json.loads(line) for line in f]
    return [r['loss'] for r in records if 'loss' in r]


@pytest.mark.parametrize('cfg', CONFIGS)
def test_tiny_lite_config_trains_and_evaluates(cfg, shapes_root, tmp_path):
    work = str(tmp_path / 'train')
    opts = shapes_options(shapes_root, epochs=EPOCHS)
    python_tool('tools/train.py', cfg, '--work-dir', work, '--cfg-options',
                *opts, 'randomness.seed=0', f'train_cfg.val_interval={EPOCHS}')
    losses = _losses(work)
    assert len(losses) == 2 * EPOCHS  # 8 images / batch 4 per epoch
    assert sum(losses[-2:]) < sum(losses[:2]), losses
    with open(osp.join(work, 'last_checkpoint')) as f:
        ckpt = f.read().strip()
    test_dir = tmp_path / 'test'
    out = python_tool('tools/test.py', cfg, ckpt, '--work-dir',
                      str(test_dir), '--cfg-options', *opts).stdout
    assert 'coco/bbox_mAP' in out
    results = glob.glob(str(test_dir / '*' / '*.json'))
    assert results
    with open(results[0]) as f:
        metrics = json.load(f)
    assert 0.0 <= metrics['coco/bbox_mAP'] <= 1.0
