"""ACT through the tools: a DETR checkpoint evaluated with ACT (no
retraining), MTKD with tools/train.py and 2-process tools/dist_train.sh,
and the cluster picture tool."""
import glob
import json
import math
import os.path as osp
import sys

import pytest
import torch
from helpers import load_config, python_tool, run_tool, shapes_options
from mmdet.registry import MODELS

DETR = 'configs/detr/detr_r18-tiny-dc5_1xb4-12e_shapes.py'
ACT = 'configs/act/act-l16_r18-tiny-dc5_1xb4-12e_shapes.py'
MTKD = 'configs/act/act-l32-mtkd_r18-tiny-dc5_1xb4-4e_shapes.py'


@pytest.fixture(scope='module')
def detr_ckpt(tmp_path_factory):
    """A checkpoint of the plain tiny DETR-DC5 (mmengine format)."""
    torch.manual_seed(0)
    model = MODELS.build(load_config(DETR[len('configs/'):]).model)
    model.init_weights()
    path = str(tmp_path_factory.mktemp('detr') / 'detr.pth')
    torch.save(dict(state_dict=model.state_dict(), meta=dict()), path)
    return path


def _scalars(work_dir):
    logs = glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json'))
    assert logs, f'no json log under {work_dir}'
    with open(logs[0]) as f:
        return [json.loads(line) for line in f if line.strip()]


def test_detr_checkpoint_evaluates_with_act(shapes_root, tmp_path,
                                            detr_ckpt):
    work = str(tmp_path / 'test')
    out = python_tool('tools/test.py', ACT, detr_ckpt, '--work-dir', work,
                      '--cfg-options', *shapes_options(shapes_root)).stdout
    assert 'coco/bbox_mAP' in out
    assert 'missing keys' not in out and 'unexpected key' not in out


def test_mtkd_with_train_py(shapes_root, tmp_path, detr_ckpt):
    work = str(tmp_path / 'mtkd')
    out = python_tool('tools/train.py', MTKD, '--work-dir', work,
                      '--cfg-options', f'load_from={detr_ckpt}',
                      *shapes_options(shapes_root, epochs=1)).stdout
    assert 'MTKD on: shared weights' in out
    rows = [r for r in _scalars(work) if 'loss_kd' in r]
    assert len(rows) == 2  # 8 images / batch 4, logged every iteration
    for r in rows:
        for key in ('student.loss_cls', 'student.loss_bbox',
                    'teacher.loss_cls', 'teacher.loss_iou', 'loss_kd',
                    'loss'):
            assert math.isfinite(r[key]), (key, r)
        assert 0 < r['act_protos_l0'] <= 1 and 0 < r['act_protos_l1'] <= 1
    assert osp.exists(osp.join(work, 'epoch_1.pth'))


def test_mtkd_with_dist_train_two_processes(shapes_root, tmp_path,
                                            detr_ckpt):
    work = str(tmp_path / 'dist')
    out = run_tool([
        'bash', 'tools/dist_train.sh', MTKD, '2', '--work-dir', work,
        '--cfg-options', f'load_from={detr_ckpt}',
        *shapes_options(shapes_root, epochs=1, batch_size=2)
    ],
                   env=dict(PYTHON=sys.executable, PORT='29547')).stdout
    assert 'unused parameters' not in out.lower()
    # 8 images / (2 procs x 2) = 2 iterations: the second one would fail in
    # DDP if the first had left parameters without gradient
    assert 'Epoch(train) [1][2/2]' in out
    assert 'loss_kd' in out and 'teacher.loss_cls' in out
    assert osp.exists(osp.join(work, 'epoch_1.pth'))


def test_visualize_act_clusters(shapes_root, tmp_path, detr_ckpt):
    img = sorted(glob.glob(osp.join(shapes_root, 'val', '*')))[0]
    out = str(tmp_path / 'clusters.png')
    res = python_tool('tools/analysis_tools/visualize_act_clusters.py', ACT,
                      detr_ckpt, img, '--layer', '1', '--head', '3',
                      '--out', out).stdout
    assert 'clusters for' in res
    import mmcv
    pic = mmcv.imread(out)
    src = mmcv.imread(img)
    assert pic.shape == src.shape
