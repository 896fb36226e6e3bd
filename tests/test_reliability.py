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


# ------------------------------------------------ 4. config errors at build
FOCUS = 'focus_detr/focus-detr-4scale_r18-tiny_1xb4-12e_shapes.py'
LITE_DINO = 'lite_detr/lite-dino-h3l1-3blk_r18-tiny_1xb4-12e_shapes.py'
LITE_DDETR = \
    'lite_detr/lite-deformable-detr-h3l1-3blk_r18-tiny_1xb4-12e_shapes.py'
SMCA = 'smca/smca_r18-tiny_1xb4-12e_shapes.py'
SMCA_MS = 'smca/smca-ms_r18-tiny_1xb4-12e_shapes.py'
DINO = 'dino/dino-4scale_r18-tiny_1xb4-12e_shapes.py'


def _enc_levels(n):
    return lambda m: m.encoder.layer_cfg.self_attn_cfg.update(num_levels=n)


BAD_CONFIGS = {
    'focus: encoder num_levels': (FOCUS, _enc_levels(3), [
        'encoder.layer_cfg.self_attn_cfg.num_levels=4',
        'num_feature_levels=4'
    ]),
    'lite-dino: encoder num_levels': (LITE_DINO, _enc_levels(3), [
        'encoder.layer_cfg.self_attn_cfg.num_levels=4',
        'num_feature_levels=4'
    ]),
    'lite-ddetr: encoder num_levels': (LITE_DDETR, _enc_levels(3), [
        'encoder.layer_cfg.self_attn_cfg.num_levels=4',
        'num_feature_levels=4'
    ]),
    'lite-dino: num_feature_levels vs neck':
    (LITE_DINO, lambda m: m.update(num_feature_levels=3),
     ['num_feature_levels=3', 'neck gives 4', 'neck.num_outs=3']),
    'smca: single-scale feat_strides': (
        SMCA, lambda m: m.update(feat_strides=(16, )),
        ['feat_strides=(16,)', 'set feat_strides=(32,)']),
    'smca: dc5 backbone, feat_strides of C5': (
        SMCA, lambda m: m.backbone.update(
            strides=(1, 2, 2, 1), dilations=(1, 1, 1, 2)),
        ['feat_strides=(32,)', 'set feat_strides=(16,)']),
    'smca: multi-scale feat_strides': (
        SMCA_MS, lambda m: m.update(feat_strides=(8, 16, 32)),
        ['feat_strides=(8, 16, 32)', 'set feat_strides=(16, 32, 64)']),
    'dino: num_queries 0': (DINO, lambda m: m.update(num_queries=0),
                            ['num_queries must be a positive integer']),
    'detr: num_queries 0': (DETR, lambda m: m.update(num_queries=0),
                            ['num_queries must be a positive integer']),
    'smca: num_queries 0': (SMCA, lambda m: m.update(num_queries=0),
                            ['num_queries must be a positive integer']),
    'focus: keep_ratio list': (
        FOCUS, lambda m: m.selector.update(keep_ratio=[0.5]),
        ['keep_ratio must be one number in (0, 1]', '[0.5]']),
}


@pytest.mark.parametrize('case', list(BAD_CONFIGS))
def test_config_errors_at_build_time(case):
    from helpers import load_config
    from mmdet.registry import MODELS
    rel, edit, words = BAD_CONFIGS[case]
    cfg = load_config(rel)
    edit(cfg.model)
    with pytest.raises(ValueError) as info:
        MODELS.build(cfg.model)
    assert all(w in str(info.value) for w in words), str(info.value)


# ------------------------------------------------------ 5. degenerate inputs
def _tiny_model(rel, **model):
    from helpers import load_config
    from mmdet.registry import MODELS
    cfg = load_config(rel)
    cfg.model.update(model)
    torch.manual_seed(0)
    m = MODELS.build(cfg.model)
    m.init_weights()
    return m


@pytest.mark.parametrize('rel', [DINO, FOCUS, LITE_DINO, LITE_DDETR])
def test_fewer_tokens_than_queries(rel):
    """A 32 x 64 image has 32 + 8 + 2 + 1 = 43 tokens at strides 8..64,
    fewer than the 100 queries of the tiny models (as a 21 x 1333 image for
    900 queries): the query selection takes all tokens plus padded
    candidates, in training and in inference."""
    from helpers import det_samples
    model = _tiny_model(rel)
    x = torch.rand(2, 3, 32, 64)
    samples = det_samples([(32, 64), (32, 50)],
                          boxes=[[[4, 4, 30, 28]], [[10, 2, 40, 20]]],
                          labels=[[1], [2]])
    model.train()
    losses = model.loss(x, samples)
    total = sum(v for k, v in losses.items() if 'loss' in k)
    assert torch.isfinite(total)
    total.backward()
    model.eval()
    with torch.no_grad():
        preds = model.predict(x, det_samples([(32, 64), (32, 50)]))
    for p in preds:
        assert len(p.pred_instances) == 100
        assert torch.isfinite(p.pred_instances.bboxes).all()
        assert torch.isfinite(p.pred_instances.scores).all()


def test_fewer_tokens_selects_every_token_plus_padding():
    """With N < num_queries tokens the selection holds every token's
    proposal and num_queries - N padded candidates (box sigmoid(inf) = 1,
    what mmdet gives a padded position of a batched image)."""
    model = _tiny_model(DINO)
    model.eval()
    shapes = torch.tensor([[4, 8], [2, 4], [1, 2], [1, 1]])
    n = int(shapes.prod(1).sum())  # 43
    memory = torch.randn(1, n, 128)
    with torch.no_grad():
        dec_in, _ = model.pre_decoder(memory, None, shapes)
        out_mem, out_prop = model.gen_encoder_output_proposals(
            memory, None, shapes)
        layer = model.decoder.num_layers
        real = (model.bbox_head.reg_branches[layer](out_mem) +
                out_prop).sigmoid()[0]
    ref = dec_in['reference_points'][0]
    assert ref.shape == (100, 4) and out_mem.shape[1] == n  # unpadded here
    padded = (ref == 1).all(dim=1)
    assert int(padded.sum()) >= 100 - n
    for row in real:  # every token is a candidate
        assert (ref == row).all(dim=1).any()


@pytest.mark.parametrize('rel', [DETR, DINO])
def test_non_finite_input_names_the_image(rel):
    from helpers import det_samples

    from efficient_detr_mm.common.checks import NonFiniteError
    model = _tiny_model(rel)
    model.train()
    x = torch.rand(2, 3, 64, 64)
    x[1, 0, 5, 5] = float('nan')
    samples = det_samples([(64, 64)] * 2,
                          boxes=[[[4, 4, 30, 28]], [[10, 2, 40, 20]]],
                          labels=[[1], [2]])
    for i, s in enumerate(samples):
        s.set_metainfo(dict(img_path=f'img_{i}.jpg'))
    with pytest.raises(NonFiniteError) as info:
        model(x, samples, mode='loss')
    assert 'img_1.jpg: pixels' in str(info.value)
    assert 'img_0.jpg' not in str(info.value)


def test_non_finite_weights_give_a_clear_error():
    """NaN weights (a diverged run, a corrupt checkpoint) make NaN
    predictions: the matching names them instead of scipy's "matrix contains
    invalid numeric entries"."""
    from helpers import det_samples

    from efficient_detr_mm.common.checks import NonFiniteError
    model = _tiny_model(DETR)
    model.train()
    # the wrapped assigner copies and pickles with the model
    import copy
    import pickle
    for clone in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        assert clone.bbox_head.assigner.match_costs is not None
    with torch.no_grad():
        model.bbox_head.fc_cls.weight.fill_(float('nan'))
    samples = det_samples([(64, 64)], boxes=[[[4, 4, 30, 28]]], labels=[[1]])
    with pytest.raises(NonFiniteError, match='predicted scores'):
        model(torch.rand(1, 3, 64, 64), samples, mode='loss')


def test_empty_image_file_is_named(shapes_root, tmp_path):
    import shutil

    from mmdet.datasets import CocoDataset
    root = str(tmp_path / 'shapes')
    shutil.copytree(shapes_root, root)
    bad = osp.join(root, 'val', '000001.jpg')
    open(bad, 'wb').close()  # 0 bytes
    ds = CocoDataset(
        data_root=root,
        ann_file='annotations/instances_val.json',
        data_prefix=dict(img='val/'),
        test_mode=True,
        pipeline=[
            dict(type='LoadImageFromFile'),
            dict(type='PackDetInputs')
        ])
    assert ds[0]['inputs'].shape[0] == 3
    with pytest.raises(Exception) as info:
        ds[1]
    assert bad in str(info.value) and 'empty (0 bytes)' in str(info.value)


# ------------------------------------------------------------------ 6. docs
def test_readme_documents_amp_resume_and_partial_load():
    with open(osp.join(REPO, 'README.md')) as f:
        text = ' '.join(f.read().split())
    assert '`--amp` (mixed precision) needs a CUDA device' in text
    assert 'After a killed or crashed run' in text
    assert 'with `--resume`: it continues from the newest complete ' \
        'checkpoint' in text
    assert '`--partial-load`' in text and 'partial_load = True' in text


def test_non_finite_loss_is_named():
    from efficient_detr_mm.common.checks import (NonFiniteError,
                                                 check_finite_losses)
    check_finite_losses(dict(loss_cls=torch.tensor(1.0), acc=torch.ones(2)))
    with pytest.raises(NonFiniteError, match=r'loss: d1\.loss_bbox;'):
        check_finite_losses(
            dict(
                loss_cls=torch.tensor(0.5),
                **{'d1.loss_bbox': torch.tensor(float('inf'))}))
