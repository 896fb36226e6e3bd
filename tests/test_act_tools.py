"""ACT through the tools: a DETR checkpoint evaluated with ACT (no
retraining), MTKD with tools/train.py and 2-process tools/dist_train.sh,
and the cluster picture tool."""
import glob
import importlib.util
import json
import math
import os.path as osp
import sys

import pytest
import torch
from helpers import REPO, load_config, python_tool, run_tool, shapes_options
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


def _act_study_module():
    spec = importlib.util.spec_from_file_location(
        'act_study', osp.join(REPO, 'projects', 'shapes', 'act_study.py'))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_act_study_script_end_to_end(tmp_path):
    """projects/shapes/act_study.py on a given checkpoint, all three stages
    at one L with the focal-loss variant, evaluated on the training split,
    then --report."""
    study = _act_study_module()
    args = study.parse_args(['--cls-loss', 'focal'])
    cfg = study.load_config(study.DETR_CFG, args)
    assert cfg.model.bbox_head.loss_cls.type == 'FocalLoss'
    assert cfg.model.train_cfg.assigner.match_costs[0]['type'] == \
        'FocalLossCost'
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    detr_ckpt = str(tmp_path / 'focal_detr.pth')
    torch.save(dict(state_dict=model.state_dict(), meta=dict()), detr_ckpt)
    work = str(tmp_path / 'study')
    out = python_tool(
        'projects/shapes/act_study.py', '--work-dir', work, '--num-train',
        '4', '--num-val', '2', '--checkpoint', detr_ckpt,
        '--checkpoint-iters', '7', '--mtkd-iters', '1', '--ls', '16',
        '--cls-loss', 'focal', '--eval-split', 'train').stdout
    with open(osp.join(work, 'act_study.json')) as f:
        res = json.load(f)
    names = [r['model'] for r in res['rows']]
    assert names == [
        'DETR (full attention)', 'ACT L=16', 'DETR +plain ft (full attention)',
        'ACT L=16 +plain ft', 'ACT L=16 +MTKD', 'MTKD L=16 weights, ACT off'
    ]
    rows = {r['model']: r for r in res['rows']}
    assert rows['ACT L=16']['iters'] == 7
    assert rows['ACT L=16 +MTKD']['iters'] == 8
    # ACT reduces the counted encoder work and records its prototypes
    full = rows['DETR (full attention)']
    act = rows['ACT L=16']
    assert act['enc_macs'] < full['enc_macs'] and not full['protos']
    assert all(0 < v <= 1 for v in act['protos'].values())
    assert len(act['protos']) == 2  # one per encoder layer
    for r in res['rows']:
        assert 0 <= r['agnostic_mAP'] <= r['agnostic_mAP50'] <= 1
    # focal loss: sigmoid classifier, one logit per class (no background)
    ckpt = osp.join(work, 'mtkd_l16', 'iter_1.pth')
    sd = torch.load(ckpt, map_location='cpu')['state_dict']
    assert sd['bbox_head.fc_cls.weight'].shape[0] == 6
    assert 'ACT L=16 +MTKD' in out
    assert 'size mismatch' not in out and 'missing keys' not in out
    # --eval-split train: the 4 training images (batch 1), not the 2 val ones
    assert 'Epoch(test) [4/4]' in out and 'Epoch(test) [2/2]' not in out
    rep = python_tool('projects/shapes/act_study.py', '--report',
                      osp.join(work, 'act_study.json')).stdout
    assert 'MTKD L=16 weights, ACT off' in rep and 'cls loss focal' in rep
    assert 'AP on the train split' in rep


def test_act_study_backbone_from_loads_only_the_backbone(tmp_path):
    study = _act_study_module()
    args = study.parse_args([])
    torch.manual_seed(0)
    donor = MODELS.build(study.load_config(study.DETR_CFG, args).model)
    ckpt = str(tmp_path / 'donor.pth')
    torch.save(dict(state_dict=donor.state_dict(), meta=dict()), ckpt)
    cfg = study.backbone_from(study.load_config(study.DETR_CFG, args), ckpt)
    torch.manual_seed(1)
    model = MODELS.build(cfg.model)
    model.init_weights()
    got, want = model.state_dict(), donor.state_dict()
    for k in ('backbone.conv1.weight', 'backbone.layer4.1.conv2.weight'):
        assert torch.equal(got[k], want[k]), k
    # the transformer keeps its own (different) initialisation
    k = 'encoder.layers.0.self_attn.attn.in_proj_weight'
    assert not torch.equal(got[k], want[k])
    with pytest.raises(SystemExit):
        study.parse_args(['--backbone-from', str(tmp_path / 'missing.pth')])


def test_act_study_class_agnostic_ap_ignores_labels(tmp_path):
    """The GT boxes as detections, every one with a wrong label (and again
    under a second wrong label, as a sigmoid head lists one query several
    times): class-agnostic AP 1."""
    from efficient_detr_mm.datasets import make_shapes_dataset
    study = _act_study_module()
    ann = make_shapes_dataset(str(tmp_path / 'shapes'), num_train=1,
                              num_val=6)['val']
    with open(ann) as f:
        gt = json.load(f)
    assert gt['annotations']
    dets = []
    for a in gt['annotations']:
        wrong = a['category_id'] % 6 + 1
        dets.append(dict(image_id=a['image_id'], bbox=a['bbox'], score=0.9,
                         category_id=wrong))
        # the same query under another label, lower score
        dets.append(dict(image_id=a['image_id'], bbox=a['bbox'], score=0.5,
                         category_id=wrong % 6 + 1))
    det_file = str(tmp_path / 'dets.bbox.json')
    with open(det_file, 'w') as f:
        json.dump(dets, f)
    ap, ap50 = study.class_agnostic_ap(ann, det_file)
    assert ap == pytest.approx(1.0) and ap50 == pytest.approx(1.0)
    # shifted boxes (IoU < 0.5 for every object) find nothing
    for d in dets:
        x, y, w, h = d['bbox']
        d['bbox'] = [x + 2 * w, y + 2 * h, w, h]
    with open(det_file, 'w') as f:
        json.dump(dets, f)
    assert study.class_agnostic_ap(ann, det_file)[1] == 0.0
