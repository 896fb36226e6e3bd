"""The SMCA converter against the official SMCA-DETR code.

tests/data/smca_fixture.pth was made by tests/data/make_smca_fixture.py from
the official model (gaopengcuhk/SMCA-DETR, reduced to ResNet-18, 1 encoder /
2 decoder layers, FFN 64, 20 queries) with the deterministic weights of
``official_like_state``: it holds the official key names and shapes, the
seeds, the official outputs of every decoder layer and the official
post-processed detections. Here the same weights are rebuilt, converted and
loaded strictly into our ``SMCADETR`` built from the COCO config with the
same reductions.
"""
import argparse
import os.path as osp
import textwrap

import pytest
import torch
from helpers import REPO, det_samples, python_tool
from mmdet.registry import MODELS
from mmengine.config import Config

from efficient_detr_mm.converters import COCO_IDS, ConversionError
from efficient_detr_mm.converters.base import check_against_model
from efficient_detr_mm.converters.smca import DROPPED_CLASS_ROWS, convert_smca
from efficient_detr_mm.converters.testing import (official_like_state,
                                                  random_input)
from efficient_detr_mm.runtime import safe_load

FIXTURE = osp.join(REPO, 'tests', 'data', 'smca_fixture.pth')
CONVERTER = osp.join(REPO, 'tools', 'model_converters', 'smca_to_mmdet.py')
COCO_CONFIG = osp.join(REPO, 'configs', 'smca', 'smca_r50_8xb2-50e_coco.py')
TOL = 1e-4


@pytest.fixture(scope='module')
def fixture():
    return safe_load(FIXTURE)


@pytest.fixture(scope='module')
def official_state(fixture):
    return official_like_state(fixture['spec'], fixture['weight_seed'],
                               fixture['overrides'])


@pytest.fixture(scope='module')
def config_file(fixture, tmp_path_factory):
    """The COCO config with the fixture's reduced official hyper-parameters
    (official argparse names mapped to our config keys)."""
    hp = fixture['hparams']
    assert hp['dynamic_scale'] == 'type3'  # modulation='per_head_xy'
    assert hp['backbone'] in ('resnet18', 'resnet34')
    depth = int(hp['backbone'][len('resnet'):])
    ffn = hp['dim_feedforward']
    text = textwrap.dedent(f"""
        _base_ = {COCO_CONFIG!r}
        model = dict(
            num_queries={hp['num_queries']},
            backbone=dict(depth={depth}, init_cfg=None),
            neck=dict(in_channels=[512], out_channels={hp['hidden_dim']}),
            positional_encoding=dict(num_feats={hp['hidden_dim'] // 2}),
            encoder=dict(
                num_layers={hp['enc_layers']},
                layer_cfg=dict(
                    self_attn_cfg=dict(num_heads={hp['nheads']}),
                    ffn_cfg=dict(feedforward_channels={ffn}))),
            decoder=dict(
                num_layers={hp['dec_layers']},
                layer_cfg=dict(
                    self_attn_cfg=dict(num_heads={hp['nheads']}),
                    cross_attn_cfg=dict(num_heads={hp['nheads']}),
                    ffn_cfg=dict(feedforward_channels={ffn}),
                    gaussian_cfg=dict(beta={hp['smooth']}))),
            test_cfg=dict(max_per_img={hp['num_queries']}))
        """)
    path = tmp_path_factory.mktemp('smca_cfg') / 'smca_reduced.py'
    path.write_text(text)
    return str(path)


@pytest.fixture(scope='module')
def converted(official_state, config_file):
    """Our model with the converted weights, in eval mode."""
    cfg = Config.fromfile(config_file)
    model = MODELS.build(cfg.model).eval()
    conv = convert_smca(official_state)
    check_against_model(conv, model.state_dict())  # every key, both ways
    model.load_state_dict(conv.out, strict=True)
    return model, conv


def _inputs(fixture):
    img = random_input(fixture['input_shape'], fixture['input_seed'])
    assert float(img.sum()) == pytest.approx(fixture['input_sum'], abs=1e-3)
    h, w = fixture['input_shape'][-2:]
    return img, det_samples([(h, w)])


def test_every_key_converted(official_state, converted):
    _, conv = converted
    assert not conv.unconsumed()
    assert not conv.dropped
    assert conv.out['bbox_head.fc_cls.weight'].shape[0] == 80
    # class rows come from the COCO ids, not from rows 0-79
    torch.testing.assert_close(conv.out['bbox_head.fc_cls.bias'],
                               official_state['class_embed.bias'][COCO_IDS])
    assert len(DROPPED_CLASS_ROWS) == 12 and 91 in DROPPED_CLASS_ROWS


def test_outputs_equal_official(fixture, converted):
    """Class scores and boxes of every decoder layer."""
    model, _ = converted
    img, samples = _inputs(fixture)
    with torch.no_grad():
        cls, boxes = model(img, samples, mode='tensor')
    official_cls = fixture['logits'][..., COCO_IDS]
    assert cls.shape == official_cls.shape  # (layers, 1, nq, 80)
    assert (cls - official_cls).abs().max() <= TOL
    assert (boxes - fixture['boxes']).abs().max() <= TOL


def test_detections_equal_official(fixture, converted):
    """Final detections, labels mapped to mmdet's classes.

    The official top-k runs over all 92 rows; detections whose label is no
    COCO class (row 0, 11 unused ids, no-object) have no mmdet class. The
    others are exactly our top detections, in the same order: ours only
    add lower-scoring detections in the freed slots.
    """
    model, _ = converted
    img, samples = _inputs(fixture)
    with torch.no_grad():
        det = model.predict(img, samples, rescale=False)[0].pred_instances
    id_to_label = {cid: i for i, cid in enumerate(COCO_IDS)}
    keep = torch.tensor(
        [int(c) in id_to_label for c in fixture['det_labels']])
    n = int(keep.sum())
    assert 0 < n < len(keep)  # the fixture exercises both cases
    labels = torch.tensor(
        [id_to_label[int(c)] for c in fixture['det_labels'][keep]])
    assert len(det.scores) == len(fixture['det_scores'])
    assert torch.equal(det.labels[:n], labels)
    assert (det.scores[:n] - fixture['det_scores'][keep]).abs().max() <= TOL
    assert (det.bboxes[:n] - fixture['det_boxes'][keep]).abs().max() <= TOL
    assert (det.scores[n:] <= fixture['det_scores'][keep][-1]).all()


def test_clip_boxes_option(fixture, converted):
    """``test_cfg.clip_boxes=True`` clips as mmdet's DETRHead; the default
    (official) does not."""
    model, _ = converted
    img, samples = _inputs(fixture)
    h, w = fixture['input_shape'][-2:]
    with torch.no_grad():
        free = model.predict(img, samples, rescale=False)[0].pred_instances
        model.bbox_head.clip_boxes = True
        try:
            clip = model.predict(img, samples,
                                 rescale=False)[0].pred_instances
        finally:
            model.bbox_head.clip_boxes = False
    limits = torch.tensor([w, h, w, h], dtype=torch.float32)
    outside = (free.bboxes < 0) | (free.bboxes > limits)
    assert outside.any()  # the fixture has boxes crossing the border
    torch.testing.assert_close(clip.bboxes,
                               free.bboxes.clamp(min=0).minimum(limits))
    with pytest.raises(ValueError, match='clip_boxes'):
        MODELS.build(dict(Config.fromfile(COCO_CONFIG).model.bbox_head,
                          test_cfg=dict(clip_boxes='no')))


def test_bad_checkpoints_name_the_problem(official_state):
    state = dict(official_state)
    state['class_embed.weight'] = state['class_embed.weight'][:81]
    with pytest.raises(ConversionError, match='class_embed.weight has 81'):
        convert_smca(state)
    state = dict(official_state)
    key = 'transformer.decoder.layers.1.point3.weight'
    state[key] = torch.zeros(24, 256)
    with pytest.raises(ConversionError, match='type4'):
        convert_smca(state)
    state = dict(official_state, **{'input_proj_2048.weight': torch.zeros(1)})
    with pytest.raises(ConversionError, match='multi-scale'):
        convert_smca(state)


def _official_checkpoint(path, state, fixture, **args):
    """A file as the official main.py writes it."""
    torch.save(
        dict(
            model=state,
            epoch=49,
            args=argparse.Namespace(**dict(fixture['official_args'],
                                           **args))), path)


def _load_tool():
    import importlib.util
    spec = importlib.util.spec_from_file_location('smca_to_mmdet',
                                                  CONVERTER)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool


def test_cli_converts_and_writes_dataset_meta(fixture, official_state,
                                              config_file, tmp_path):
    src, dst = tmp_path / 'smca_official.pth', tmp_path / 'smca_mmdet.pth'
    _official_checkpoint(src, official_state, fixture)
    proc = python_tool(CONVERTER, str(src), str(dst), '--config',
                       config_file)
    assert 'wrote' in proc.stdout
    ckpt = safe_load(str(dst))
    meta = ckpt['meta']
    assert len(meta['dataset_meta']['classes']) == 80
    assert meta['dataset_meta']['classes'][0] == 'person'
    assert 'smca_to_mmdet' in meta['converter']
    cfg = Config.fromfile(config_file)
    model = MODELS.build(cfg.model)
    model.load_state_dict(ckpt['state_dict'], strict=True)


@pytest.mark.parametrize('change', ['extra', 'missing'])
def test_cli_fails_naming_the_key(fixture, official_state, config_file,
                                  tmp_path, change):
    tool = _load_tool()
    state = dict(official_state)
    if change == 'extra':
        key = 'transformer.decoder.layers.1.norm5.weight'
        state[key] = torch.ones(256)
    else:
        key = 'transformer.encoder.layers.0.norm2.bias'
        del state[key]
        key = 'encoder.layers.0.norms.1.bias'  # the model key not filled
    src, dst = tmp_path / 'src.pth', tmp_path / 'dst.pth'
    _official_checkpoint(src, state, fixture)
    with pytest.raises(ConversionError, match=key.replace('.', r'\.')):
        tool.main([str(src), str(dst), '--config', config_file])
    assert not dst.exists()


@pytest.mark.parametrize('arg, value', [('smooth', 4.0), ('dilation', True),
                                        ('dynamic_scale', 'type2')])
def test_cli_fails_on_training_args_the_config_does_not_match(
        fixture, official_state, config_file, tmp_path, arg, value):
    """Arguments that leave names and shapes unchanged (or change a shape
    for a reason the key check cannot tell) are named."""
    src, dst = tmp_path / 'src.pth', tmp_path / 'dst.pth'
    _official_checkpoint(src, official_state, fixture, **{arg: value})
    with pytest.raises(ConversionError, match=f'--{arg} {value!r}'):
        _load_tool().main([str(src), str(dst), '--config', config_file])
    assert not dst.exists()
