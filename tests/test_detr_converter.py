"""DETR / DETR-DC5 converter: official outputs reproduced exactly, and the
torchvision-exact DC5 backbone.

The fixture (tests/data/detr_fixture.pth, made by
tests/data/make_detr_fixture.py from the official facebookresearch/detr
code) holds, per reduced official model, its key names and shapes, the seed
of its weights, the official input and the official outputs of every
decoder layer and of its post-processing.
"""
import argparse
import copy
import os.path as osp
import runpy
import sys

import pytest
import torch
import torch.nn.functional as F
from helpers import REPO, config_path
from mmdet.registry import MODELS
from mmdet.structures import DetDataSample
from mmengine.config import Config

from efficient_detr_mm.converters import COCO_IDS, ConversionError
from efficient_detr_mm.converters.base import check_against_model
from efficient_detr_mm.converters.detr import (DC5_CONFIG, DEFAULT_CONFIG,
                                               NO_OBJECT, check_official_args,
                                               convert_detr, default_config)
from efficient_detr_mm.converters.testing import official_like_state
from efficient_detr_mm.runtime import safe_load

FIXTURE = osp.join(REPO, 'tests', 'data', 'detr_fixture.pth')
TOL = 1e-4
ROWS = COCO_IDS + [NO_OBJECT]


@pytest.fixture(scope='module')
def fixture():
    return safe_load(FIXTURE)


def official_state(case: dict) -> dict:
    state = official_like_state(case['spec'], case['seed'])
    state.update(case['overrides'])
    checksum = sum(float(v.double().sum()) for v in state.values())
    assert checksum == pytest.approx(case['state_checksum'], rel=1e-9), (
        'official_like_state no longer reproduces the fixture weights')
    return state


def reduced_config(case: dict, dc5_backbone: str = 'DilatedResNet'):
    """The COCO config with the fixture's reduced official hyper-parameters
    (written to a file so that the CLI can take it too)."""
    args = case['official_args']
    dc5 = args['dilation']
    cfg = Config.fromfile(
        osp.join(REPO, DC5_CONFIG if dc5 else DEFAULT_CONFIG))
    depth = int(args['backbone'].replace('resnet', ''))
    dims, heads, ffn = (args['hidden_dim'], args['nheads'],
                        args['dim_feedforward'])
    m = cfg.model
    m.num_queries = args['num_queries']
    m.backbone.update(depth=depth, init_cfg=None)
    if dc5:
        m.backbone.type = dc5_backbone
    m.neck.in_channels = [512 if depth < 50 else 2048]
    m.neck.out_channels = dims
    m.encoder.num_layers = args['enc_layers']
    m.decoder.num_layers = args['dec_layers']
    for part in (m.encoder.layer_cfg, m.decoder.layer_cfg):
        for attn in ('self_attn_cfg', 'cross_attn_cfg'):
            if attn in part:
                part[attn].update(embed_dims=dims, num_heads=heads)
        part.ffn_cfg.update(embed_dims=dims, feedforward_channels=ffn)
    m.positional_encoding.num_feats = dims // 2
    m.bbox_head.embed_dims = dims
    m.test_cfg.max_per_img = args['num_queries']
    return cfg


def build(cfg):
    model = MODELS.build(cfg.model)
    model.eval()
    return model


def samples(img):
    h, w = img.shape[-2:]
    s = DetDataSample(
        metainfo=dict(
            img_shape=(h, w),
            ori_shape=(h, w),
            batch_input_shape=(h, w),
            pad_shape=(h, w),
            scale_factor=(1.0, 1.0)))
    return [s]


@pytest.mark.parametrize('name', ['detr_r18', 'detr_r50_dc5'])
def test_official_outputs_reproduced(fixture, name):
    torch.set_num_threads(1)
    case = fixture['cases'][name]
    conv = convert_detr(official_state(case))
    model = build(reduced_config(case))
    # every source key consumed, every model key filled, shapes equal
    check_against_model(conv, model.state_dict())
    model.load_state_dict(conv.out, strict=True)
    img = case['input']
    with torch.no_grad():
        cls, box = model(img, samples(img), mode='tensor')
        dets = model.predict(img, samples(img), rescale=True)[0]
    # every decoder layer: the 80 class rows at their COCO ids + no-object
    ref_cls, ref_box = case['logits'][..., ROWS], case['boxes']
    assert cls.shape == ref_cls.shape and box.shape == ref_box.shape
    assert (cls - ref_cls).abs().max() <= TOL
    assert (box - ref_box).abs().max() <= TOL
    # final detections: official labels are COCO ids, ours mmdet classes
    # (the DC5 config does not clip boxes, as the official code; the plain
    # config keeps mmdet's clipping)
    ref = case['detections']
    h, w = img.shape[-2:]
    ref_boxes = ref['boxes'].clone()
    if getattr(model.bbox_head, 'clip_boxes', True):
        ref_boxes[:, 0::2] = ref_boxes[:, 0::2].clamp(0, w)
        ref_boxes[:, 1::2] = ref_boxes[:, 1::2].clamp(0, h)
    ours = dets.pred_instances
    assert len(ours) == len(ref['scores'])
    cost = torch.cat([ours.scores[:, None], ours.bboxes], 1)[:, None] - \
        torch.cat([ref['scores'][:, None], ref_boxes], 1)[None]
    match = cost.abs().amax(-1).argmin(1)  # same query: same score + box
    assert sorted(match.tolist()) == list(range(len(match)))
    assert (ours.scores - ref['scores'][match]).abs().max() <= TOL
    assert (ours.bboxes - ref_boxes[match]).abs().max() <= TOL
    assert [COCO_IDS[i] for i in ours.labels] == ref['labels'][match].tolist()


def test_dc5_needs_the_torchvision_dilation(fixture):
    """mmdet's ResNet dilates layer4[0] too: the same weights then give
    different outputs (the check above would fail without DilatedResNet)."""
    case = fixture['cases']['detr_r50_dc5']
    conv = convert_detr(official_state(case))
    model = build(reduced_config(case, dc5_backbone='ResNet'))
    model.load_state_dict(conv.out, strict=True)
    img = case['input']
    with torch.no_grad():
        cls, _ = model(img, samples(img), mode='tensor')
    assert (cls - case['logits'][..., ROWS]).abs().max() > 1e-2


@pytest.mark.parametrize('depth', [18, 50])
def test_dilated_resnet_keeps_first_block_undilated(depth):
    cfg = dict(
        type='DilatedResNet',
        depth=depth,
        strides=(1, 2, 2, 1),
        dilations=(1, 1, 1, 2),
        out_indices=(3, ))
    net = MODELS.build(cfg)
    stage = net.layer4
    # the 3x3 conv of a block: conv2 in a Bottleneck, conv1 in a BasicBlock
    convs = [b.conv2 if depth >= 50 else b.conv1 for b in stage]
    assert convs[0].dilation == (1, 1) and convs[0].padding == (1, 1)
    assert convs[0].stride == (1, 1)
    assert stage[0].downsample[0].stride == (1, 1)
    for conv in convs[1:]:
        assert conv.dilation == (2, 2) and conv.padding == (2, 2)
    if depth < 50:
        assert all(b.conv2.dilation == (1, 1) for b in stage)
    assert net.block_dilations[3] == [1] + [2] * (len(stage) - 1)
    assert net.block_dilations[:3] == [[1] * len(getattr(net, f'layer{i}'))
                                       for i in (1, 2, 3)]
    # same parameters as mmdet's ResNet; dilate_first_block=True is it
    ref = MODELS.build(dict(cfg, type='ResNet'))
    assert {k: v.shape for k, v in ref.state_dict().items()} == \
        {k: v.shape for k, v in net.state_dict().items()}
    mm = MODELS.build(dict(cfg, dilate_first_block=True))
    assert mm.block_dilations[3] == [2] * len(stage)
    mm.load_state_dict(ref.state_dict())
    x = torch.randn(1, 3, 64, 64)
    for m in (net, mm, ref):
        m.eval()  # mmdet's ResNet.train returns None: no chaining
    with torch.no_grad():
        assert torch.equal(mm(x)[0], ref(x)[0])
        assert net(x)[0].shape == ref(x)[0].shape == (1, 512 * (
            4 if depth >= 50 else 1), 4, 4)


def test_dc5_configs_use_the_torchvision_backbone():
    for rel in ('detr/detr_r50-dc5_8xb2-500e_coco.py',
                'detr/detr_r18-tiny-dc5_1xb4-12e_shapes.py',
                'act/act-l32_r50-dc5_8xb2-500e_coco.py',
                'act/act-l16_r18-tiny-dc5_1xb4-12e_shapes.py'):
        backbone = Config.fromfile(config_path(rel)).model.backbone
        assert backbone.type == 'DilatedResNet', rel
        assert not backbone.get('dilate_first_block', False), rel


def test_detr_head_clip_boxes_option():
    """EffDETRHead: clip_boxes=True is mmdet's DETRHead, False keeps boxes
    that leave the image (official PostProcess)."""
    from mmdet.models.dense_heads import DETRHead
    head_cfg = dict(
        num_classes=3,
        embed_dims=8,
        loss_cls=dict(
            type='CrossEntropyLoss',
            bg_cls_weight=0.1,
            use_sigmoid=False,
            loss_weight=1.0,
            class_weight=1.0))
    torch.manual_seed(0)
    ref = DETRHead(**copy.deepcopy(head_cfg), test_cfg=dict(max_per_img=2))
    ours = MODELS.build(
        dict(type='EffDETRHead', **head_cfg,
             test_cfg=dict(max_per_img=2, clip_boxes=False)))
    clip = MODELS.build(
        dict(type='EffDETRHead', **head_cfg, test_cfg=dict(max_per_img=2)))
    # the same losses as DETRHead (its background weight included)
    assert ours.bg_cls_weight == ref.bg_cls_weight == 0.1
    assert torch.equal(ours.loss_cls.class_weight, ref.loss_cls.class_weight)
    cls = torch.randn(3, 4)
    box = torch.tensor([[0.05, 0.5, 0.5, 0.2], [0.5, 0.5, 0.2, 0.2],
                        [0.9, 0.95, 0.4, 0.3]])
    meta = dict(img_shape=(40, 60), scale_factor=(2.0, 2.0))
    a = ref._predict_by_feat_single(cls, box, meta)
    b = clip._predict_by_feat_single(cls, box, meta)
    c = ours._predict_by_feat_single(cls, box, meta)
    assert torch.equal(a.bboxes, b.bboxes) and torch.equal(a.labels, b.labels)
    assert torch.equal(a.scores, c.scores) and torch.equal(a.labels, c.labels)
    index = F.softmax(cls, -1)[:, :-1].max(-1)[0].topk(2)[1]
    cx, cy, bw, bh = box[index].unbind(-1)
    expected = torch.stack([(cx - bw / 2) * 60, (cy - bh / 2) * 40,
                            (cx + bw / 2) * 60, (cy + bh / 2) * 40], -1) / 2
    assert torch.allclose(c.bboxes, expected)
    assert (c.bboxes < 0).any() or (c.bboxes[:, 2] > 30).any()
    with pytest.raises(ValueError, match='clip_boxes'):
        MODELS.build(dict(type='EffDETRHead', **head_cfg,
                          test_cfg=dict(clip_boxes='no')))


def test_default_config_from_file_name():
    assert default_config('/x/detr-r50-dc5-f0fb7ef5.pth') == DC5_CONFIG
    assert default_config('detr-r50-e632da11.pth') == DEFAULT_CONFIG
    with pytest.raises(ConversionError, match='--config'):
        default_config('detr-r101-dc5-a2e86def.pth')


def _write_official(path, state, **args):
    """An official-format file: ``model`` + the training ``args``."""
    official = dict(
        backbone='resnet18',
        dilation=False,
        nheads=8,
        num_queries=20,
        pre_norm=False,
        position_embedding='sine',
        masks=False)
    official.update(args)
    torch.save(dict(model=state, args=argparse.Namespace(**official)), path)


def _run_cli(*argv):
    script = osp.join(REPO, 'tools', 'model_converters', 'detr_to_mmdet.py')
    old = sys.argv
    sys.argv = [script, *argv]
    try:
        runpy.run_path(script, run_name='__main__')
    finally:
        sys.argv = old


def test_cli_writes_checkpoint_and_names_bad_keys(fixture, tmp_path,
                                                  capsys):
    case = fixture['cases']['detr_r18']
    state = official_state(case)
    cfg_file = str(tmp_path / 'detr_reduced.py')
    reduced_config(case).dump(cfg_file)
    src, dst = str(tmp_path / 'detr.pth'), str(tmp_path / 'out.pth')
    _write_official(src, state)  # official layout, argparse args included
    _run_cli(src, dst, '--config', cfg_file)
    assert 'wrote' in capsys.readouterr().out
    ckpt = safe_load(dst)
    assert ckpt['meta']['dataset_meta']['classes'][0] == 'person'
    assert len(ckpt['meta']['dataset_meta']['classes']) == 80
    assert torch.equal(ckpt['state_dict']['bbox_head.fc_cls.bias'],
                       state['class_embed.bias'][ROWS])

    extra = dict(state, **{'transformer.extra.weight': torch.zeros(1)})
    _write_official(src, extra)
    with pytest.raises(ConversionError, match='transformer.extra.weight'):
        _run_cli(src, dst, '--config', cfg_file)
    missing = dict(state)
    missing.pop('transformer.decoder.layers.1.norm2.bias')
    _write_official(src, missing)
    with pytest.raises(ConversionError,
                       match=r'decoder\.layers\.1\.norms\.1\.bias'):
        _run_cli(src, dst, '--config', cfg_file)
    # what the tensors cannot show: the saved training args are checked
    _write_official(src, state, dilation=True, nheads=4)
    with pytest.raises(ConversionError, match='--dilation True') as err:
        _run_cli(src, dst, '--config', cfg_file)
    assert '--nheads 4' in str(err.value)


def test_official_args_check_torchvision_dc5(fixture):
    """A DETR-DC5 checkpoint into a backbone that dilates layer4[0]
    (mmdet's ResNet) fails naming the fix."""
    case = fixture['cases']['detr_r50_dc5']
    args = argparse.Namespace(dilation=True, nheads=8, num_queries=20)
    check_official_args(args, build(reduced_config(case)))
    with pytest.raises(ConversionError, match='DilatedResNet'):
        check_official_args(
            args, build(reduced_config(case, dc5_backbone='ResNet')))
    with pytest.raises(ConversionError, match='--dilation True'):
        check_official_args(args, build(reduced_config(
            fixture['cases']['detr_r18'])))


def test_class_rows_are_checked():
    with pytest.raises(ConversionError, match='class_embed.weight has 81'):
        convert_detr({
            'backbone.0.body.conv1.weight': torch.zeros(1),
            'class_embed.weight': torch.zeros(81, 4)
        })
