"""tools/train.py, --resume, load_from and tools/test.py under torch 2.13."""
import glob
import json
import os.path as osp

import pytest
import torch
from helpers import python_tool, shapes_options

CFG = 'configs/dino/dino-4scale_r18-tiny_1xb4-12e_shapes.py'


def _last_ckpt(work_dir):
    with open(osp.join(work_dir, 'last_checkpoint')) as f:
        return f.read().strip()


def test_train_resume_load_from_and_test(shapes_root, tmp_path):
    work = str(tmp_path / 'run')
    opts = shapes_options(shapes_root, epochs=1)
    python_tool('tools/train.py', CFG, '--work-dir', work, '--cfg-options',
                *opts)
    ckpt = _last_ckpt(work)
    assert osp.basename(ckpt) == 'epoch_1.pth'
    # the checkpoint is a full mmengine checkpoint and torch's default
    # weights_only=True load reads it (the package allow-lists its types)
    state = torch.load(ckpt, map_location='cpu')
    assert state['meta']['epoch'] == 1 and state['meta']['iter'] == 2
    assert 'optimizer' in state and 'message_hub' in state

    # --resume continues from epoch 1 / iteration 2 with the optimizer state
    opts2 = shapes_options(shapes_root, epochs=2)
    out = python_tool('tools/train.py', CFG, '--work-dir', work, '--resume',
                      '--cfg-options', *opts2).stdout
    assert 'resumed epoch: 1, iter: 2' in out, out[-3000:]
    state2 = torch.load(_last_ckpt(work), map_location='cpu')
    assert state2['meta']['epoch'] == 2 and state2['meta']['iter'] == 4
    step = [v['step'] for v in state2['optimizer']['state'].values()]
    assert max(float(s) for s in step) == 4  # Adam steps continued from 2

    # load_from: weights only, a fresh schedule; with --auto-scale-lr at
    # half the config's batch the lr is halved
    work3 = str(tmp_path / 'ft')
    out = python_tool('tools/train.py', CFG, '--work-dir', work3,
                      '--auto-scale-lr', '--cfg-options', f'load_from={ckpt}',
                      *shapes_options(shapes_root, epochs=1,
                                      batch_size=2)).stdout
    assert 'Load checkpoint from' in out
    assert 'Scaling the original LR by 0.5' in out
    state3 = torch.load(_last_ckpt(work3), map_location='cpu')
    assert state3['meta']['iter'] == 4
    assert state3['optimizer']['param_groups'][-1]['lr'] == \
        pytest.approx(1e-4)

    # tools/test.py CONFIG CKPT evaluates and writes the metrics
    work4 = str(tmp_path / 'test')
    out = python_tool('tools/test.py', CFG, _last_ckpt(work), '--work-dir',
                      work4, '--cfg-options', *opts).stdout
    assert 'coco/bbox_mAP' in out
    results = glob.glob(osp.join(work4, '*', '*.json'))
    assert results
    with open(results[0]) as f:
        metrics = json.load(f)
    assert 0.0 <= metrics['coco/bbox_mAP'] <= 1.0


def test_bad_checkpoint_fails_clearly(shapes_root, tmp_path):
    import subprocess
    import sys
    bogus = tmp_path / 'not_a_checkpoint.pth'
    bogus.write_text('garbage')
    proc = subprocess.run([
        sys.executable, 'tools/test.py', CFG,
        str(bogus), '--work-dir',
        str(tmp_path / 'w'), '--cfg-options', *shapes_options(shapes_root)
    ],
                          cwd=osp.dirname(osp.dirname(__file__)),
                          stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT,
                          text=True)
    assert proc.returncode != 0
    assert 'not_a_checkpoint.pth' in proc.stdout or \
        'UnpicklingError' in proc.stdout
