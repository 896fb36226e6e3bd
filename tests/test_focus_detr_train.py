"""The tiny Focus-DETR shapes config trains (loss falls) and evaluates
through tools/train.py and tools/test.py."""
import glob
import json
import math
import os.path as osp

from helpers import python_tool, shapes_options

CFG = 'configs/focus_detr/focus-detr-4scale_r18-tiny_1xb4-12e_shapes.py'


def _train_log(work_dir):
    logs = glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json'))
    assert logs, f'no json log under {work_dir}'
    with open(logs[0]) as f:
        return [json.loads(line) for line in f if line.strip()]


def test_tiny_focus_detr_trains_and_evaluates(shapes_root, tmp_path):
    work = str(tmp_path / 'run')
    epochs = 4
    opts = shapes_options(shapes_root, epochs=epochs)
    # validate only after the last epoch
    opts = [o for o in opts if not o.startswith('train_cfg.val_interval')]
    opts += [f'train_cfg.val_interval={epochs}']
    python_tool('tools/train.py', CFG, '--work-dir', work, '--cfg-options',
                *opts)
    rows = [r for r in _train_log(work) if 'loss' in r]
    assert len(rows) == 2 * epochs  # 8 images / batch 4 per epoch
    # the FTS loss is logged (and summed into `loss`) every iteration
    assert all(math.isfinite(r['loss_fts']) for r in rows)
    loss = [r['loss'] for r in rows]
    # the total loss falls (first vs last epoch)
    assert sum(loss[-2:]) < sum(loss[:2]), loss

    with open(osp.join(work, 'last_checkpoint')) as f:
        ckpt = f.read().strip()
    out = python_tool('tools/test.py', CFG, ckpt, '--work-dir',
                      str(tmp_path / 'test'), '--cfg-options',
                      *opts).stdout
    assert 'coco/bbox_mAP' in out
    results = glob.glob(osp.join(str(tmp_path / 'test'), '*', '*.json'))
    with open(results[0]) as f:
        metrics = json.load(f)
    assert 0.0 <= metrics['coco/bbox_mAP'] <= 1.0
