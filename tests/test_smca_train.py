"""The tiny SMCA configs train (loss falls) and evaluate through
tools/train.py and tools/test.py."""
import glob
import json
import os.path as osp

import pytest
from helpers import python_tool, shapes_options

CONFIGS = [
    'configs/smca/smca_r18-tiny_1xb4-12e_shapes.py',
    'configs/smca/smca-ms_r18-tiny_1xb4-12e_shapes.py',
]


def _train_losses(work_dir):
    logs = glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json'))
    assert logs, f'no json log in {work_dir}'
    losses = []
    with open(sorted(logs)[-1]) as f:
        for line in f:
            rec = json.loads(line)
            if 'loss' in rec and 'coco/bbox_mAP' not in rec:
                losses.append(rec['loss'])
    return losses


@pytest.mark.parametrize('cfg', CONFIGS)
def test_tiny_config_trains_and_evaluates(cfg, shapes_root, tmp_path):
    work = str(tmp_path / 'train')
    opts = shapes_options(shapes_root, epochs=3)
    python_tool('tools/train.py', cfg, '--work-dir', work, '--cfg-options',
                *opts, 'randomness.seed=0', 'train_cfg.val_interval=3')
    losses = _train_losses(work)
    assert len(losses) == 6  # 3 epochs x 2 iterations
    assert sum(losses[-2:]) < sum(losses[:2]), losses
    with open(osp.join(work, 'last_checkpoint')) as f:
        ckpt = f.read().strip()
    out = python_tool('tools/test.py', cfg, ckpt, '--work-dir',
                      str(tmp_path / 'test'), '--cfg-options',
                      *opts).stdout
    assert 'coco/bbox_mAP' in out
    results = glob.glob(str(tmp_path / 'test' / '*' / '*.json'))
    with open(results[0]) as f:
        metrics = json.load(f)
    assert 0.0 <= metrics['coco/bbox_mAP'] <= 1.0


def test_visualize_smca_tool(shapes_root, tmp_path):
    img = sorted(glob.glob(osp.join(shapes_root, 'val', '*.jpg')))[0]
    out, js = tmp_path / 'maps.png', tmp_path / 'maps.json'
    python_tool('tools/analysis_tools/visualize_smca.py', CONFIGS[1], '--img',
                img, '--out', str(out), '--json', str(js), '--topk', '2')
    assert out.stat().st_size > 0
    with open(js) as f:
        res = json.load(f)
    assert len(res['boxes_xyxy']) == 2 and res['stride'] == 32
