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
    epochs = 3
    opts = shapes_options(shapes_root, epochs=epochs)
    # validate only after the last epoch
    opts = [o for o in opts if not o.startswith('train_cfg.val_interval')]
    opts += [f'train_cfg.val_interval={epochs}', 'randomness.seed=0']
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


def test_visualize_focus_tokens_tool(shapes_root, tmp_path):
    img = sorted(glob.glob(osp.join(shapes_root, 'val', '*.jpg')))[0]
    out, js = str(tmp_path / 'tokens.png'), str(tmp_path / 'tokens.json')
    python_tool('tools/analysis_tools/visualize_focus_tokens.py', CFG,
                '--img', img, '--out', out, '--json', js)
    assert osp.getsize(out) > 1000
    with open(js) as f:
        summary = json.load(f)
    n = sum(summary['tokens_per_level'])
    # the tiny config keeps floor(0.5 * N) + 1 tokens in layer 0 and
    # int(0.6 * that) in layer 1 (an unpadded single image)
    k0 = n // 2 + 1
    assert sum(summary['kept_per_level']) == k0
    assert summary['updates_per_layer'] == [k0, int(0.6 * k0)]
