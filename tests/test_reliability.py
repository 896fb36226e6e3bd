"""Reliability (issue 14): no silent overwrite of a dataset, no silent
partial checkpoint load, configuration errors at build time, clear errors on
degenerate inputs and launch environments."""
import json
import os
import os.path as osp
import runpy
import sys

import pytest
import torch
from helpers import REPO

MAKE_SHAPES = osp.join(REPO, 'tools', 'dataset_converters', 'make_shapes.py')


def _run_script(path, *args):
    """Run a tool's ``__main__`` in this process; return its exit code."""
    argv = sys.argv
    sys.argv = [path, *args]
    try:
        runpy.run_path(path, run_name='__main__')
    except SystemExit as e:
        return e.code
    finally:
        sys.argv = argv
    return 0


# ----------------------------------------------------- 2. no silent overwrite
@pytest.mark.parametrize('args, msg', [
    (('--num-train', '-5'), 'argument --num-train: must be at least 1'),
    (('--max-objects', '0'), 'argument --max-objects: must be at least 1'),
    (('--empty-prob', '2'), 'argument --empty-prob: must be in [0, 1]'),
])
def test_make_shapes_refuses_invalid_counts(tmp_path, capsys, args, msg):
    out = str(tmp_path / 'd')
    assert _run_script(MAKE_SHAPES, '--out', out, *args) == 2  # argparse
    err = capsys.readouterr().err
    assert msg in err, err
    assert not osp.exists(out)


def test_make_shapes_never_overwrites_silently(tmp_path, capsys):
    out = str(tmp_path / 'd')
    small = ('--num-train', '2', '--num-val', '1', '--img-size', '64')
    assert _run_script(MAKE_SHAPES, '--out', out, *small) == 0
    ann = osp.join(out, 'annotations', 'instances_train.json')
    img = osp.join(out, 'train', '000000.jpg')
    before = (open(ann).read(), open(img, 'rb').read(), osp.getmtime(ann))

    # the same arguments: the dataset is reused, nothing is rewritten
    assert _run_script(MAKE_SHAPES, '--out', out, *small) == 0
    assert osp.getmtime(ann) == before[2]

    # other arguments: refused with a message, nothing touched
    other = ('--num-train', '3', '--num-val', '1', '--img-size', '64',
             '--seed', '1')
    code = _run_script(MAKE_SHAPES, '--out', out, *other)
    assert code != 0 and 'refusing to overwrite' in str(code), code
    assert '--force' in str(code)
    assert (open(ann).read(), open(img, 'rb').read()) == before[:2]

    # a dataset this tool did not make (no parameter stamp) is refused too
    os.remove(osp.join(out, '.shapes_params.json'))
    code = _run_script(MAKE_SHAPES, '--out', out, *small)
    assert code != 0 and 'not made by this tool' in str(code), code
    assert (open(ann).read(), open(img, 'rb').read()) == before[:2]

    # --force rewrites
    assert _run_script(MAKE_SHAPES, '--out', out, *other, '--force') == 0
    with open(ann) as f:
        assert len(json.load(f)['images']) == 3


# ------------------------------------ 3. no silent wrong result from weights
DETR = 'detr/detr_r18-tiny_1xb4-12e_shapes.py'
NARROW = dict(base_channels=16)  # a narrow ResNet-18: small checkpoints


def _model_cfg(rel, **head):
    from helpers import load_config
    cfg = load_config(rel)
    cfg.model.backbone.update(NARROW)
    cfg.model.neck.in_channels = [c // 4 for c in cfg.model.neck.in_channels]
    cfg.model.bbox_head.update(head)
    return cfg


def _save_state(path, rel, drop_bn_counters=False, **head):
    from mmdet.registry import MODELS
    model = MODELS.build(_model_cfg(rel, **head).model)
    state = model.state_dict()
    if drop_bn_counters:  # as older / converted checkpoints
        state = {
            k: v
            for k, v in state.items() if 'num_batches_tracked' not in k
        }
    torch.save(dict(state_dict=state, meta=dict()), path)
    return str(path)


@pytest.fixture
def fast_config_text(monkeypatch):
    """mmengine formats the config with yapf for every log and checkpoint
    (seconds per call); the plain text is enough for these runs."""
    from mmengine.config import Config
    monkeypatch.setattr(Config, 'pretty_text',
                        property(lambda self: repr(self.to_dict())))


def _narrow_options(root, rel=DETR):
    from helpers import shapes_options
    cfg = _model_cfg(rel)
    return shapes_options(root) + [
        'model.backbone.base_channels=16',
        f'model.neck.in_channels={list(cfg.model.neck.in_channels)}'
    ]


@pytest.mark.parametrize('other, keys', [
    (dict(rel=DETR, num_classes=3), ['mis-shaped', 'bbox_head.fc_cls.weight']),
    (dict(rel='smca/smca_r18-tiny_1xb4-12e_shapes.py'),
     ['unexpected keys', 'decoder.layers.0.gaussian.offset_fc.weight']),
])
def test_test_tool_refuses_a_checkpoint_of_another_model(
        shapes_root, tmp_path, fast_config_text, other, keys):
    ckpt = _save_state(tmp_path / 'other.pth', **other)
    args = [
        osp.join('configs', DETR), ckpt, '--work-dir',
        str(tmp_path / 'w'), '--cfg-options', *_narrow_options(shapes_root)
    ]
    with pytest.raises(Exception) as info:
        _run_script(osp.join(REPO, 'tools', 'test.py'), *args)
    msg = str(info.value)
    assert 'other.pth does not match the model' in msg, msg
    assert all(k in msg for k in keys), msg
    assert '--partial-load' in msg
    # asked for explicitly, the partial load runs (and evaluates)
    assert _run_script(
        osp.join(REPO, 'tools', 'test.py'), *args, '--partial-load') == 0


def test_load_from_refuses_a_mismatched_checkpoint(shapes_root, tmp_path,
                                                   fast_config_text):
    ckpt = _save_state(tmp_path / 'other.pth', DETR, num_classes=3)
    args = [
        osp.join('configs', DETR), '--work-dir',
        str(tmp_path / 'w'), '--cfg-options', f'load_from={ckpt}',
        *_narrow_options(shapes_root)
    ]
    with pytest.raises(Exception, match='bbox_head.fc_cls.weight'):
        _run_script(osp.join(REPO, 'tools', 'train.py'), *args)
    assert not os.path.exists(tmp_path / 'w' / 'epoch_1.pth')


@pytest.mark.parametrize('ckpt_rel, cfg_rel', [
    (DETR, DETR),
    # ACT adds no parameter: DETR-DC5 checkpoints evaluate under ACT
    ('detr/detr_r18-tiny-dc5_1xb4-12e_shapes.py',
     'act/act-l16_r18-tiny-dc5_1xb4-12e_shapes.py'),
])
def test_matching_checkpoints_still_load_strictly(tmp_path, fast_config_text,
                                                  ckpt_rel, cfg_rel):
    from efficient_detr_mm.runtime import StrictLoadRunner
    # without BatchNorm's num_batches_tracked counters, as older mmdet and
    # converted checkpoints
    ckpt = _save_state(tmp_path / 'c.pth', ckpt_rel, drop_bn_counters=True)
    cfg = _model_cfg(cfg_rel)
    cfg.work_dir = str(tmp_path / 'w')
    cfg.model.backbone.init_cfg = None
    runner = StrictLoadRunner.from_cfg(cfg)
    runner.load_checkpoint(ckpt)
    state = torch.load(ckpt)['state_dict']
    name = 'bbox_head.fc_cls.weight'
    assert torch.equal(runner.model.state_dict()[name], state[name])


# ------------------------------------------------ 5/6. launcher, --amp on CPU
@pytest.mark.parametrize('tool', ['train.py', 'test.py'])
def test_launcher_without_its_environment_fails_clearly(
        tmp_path, monkeypatch, tool):
    for var in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT'):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv('LOCAL_RANK', '0')  # restored afterwards
    args = [osp.join('configs', DETR)]
    if tool == 'test.py':
        args.append('x.pth')
    args += ['--work-dir', str(tmp_path), '--launcher', 'pytorch']
    with pytest.raises(RuntimeError) as info:
        _run_script(osp.join(REPO, 'tools', tool), *args)
    msg = str(info.value)
    assert '--launcher pytorch' in msg and 'RANK' in msg, msg
    assert 'dist_train.sh' in msg


@pytest.mark.skipif(torch.cuda.is_available(), reason='CPU-only check')
def test_amp_refuses_on_cpu(tmp_path, shapes_root, fast_config_text):
    args = [
        osp.join('configs', DETR), '--amp', '--work-dir',
        str(tmp_path / 'w'), '--cfg-options', *_narrow_options(shapes_root)
    ]
    with pytest.raises(RuntimeError, match='--amp .* needs a CUDA device'):
        _run_script(osp.join(REPO, 'tools', 'train.py'), *args)
