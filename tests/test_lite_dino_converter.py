"""Official Lite-DETR checkpoints -> LiteDINO, proven on outputs.

tests/data/lite_dino_fixture.pth was made by
tests/data/make_lite_dino_fixture.py from the official code
(IDEA-Research/Lite-DETR, commit recorded in the fixture): for each released
R-50 variant the official model (30 queries instead of 900, otherwise the
released architecture) with deterministic random weights, its per-layer
outputs and its post-processed detections on one normalised 64 x 96 input,
and the parameter counts of the full released model.
"""
import argparse
import os.path as osp

import pytest
import torch
from helpers import REPO, det_samples, python_tool
from mmdet.registry import MODELS
from mmengine.config import Config

from efficient_detr_mm.converters import (COCO_IDS, ConversionError,
                                          check_against_model)
from efficient_detr_mm.converters.lite_dino import (CONFIGS, RELEASED, convert,
                                                    default_config, main)
from efficient_detr_mm.converters.testing import (expand_aliases,
                                                  official_like_state)
from efficient_detr_mm.runtime import safe_load

FIXTURE = osp.join(REPO, 'tests', 'data', 'lite_dino_fixture.pth')
TOOL = osp.join(REPO, 'tools', 'model_converters', 'lite_dino_to_mmdet.py')
TOL = 1e-4
VARIANTS = ['r50_s2ex3', 'r50_s3ex1', 'r50_s3ex3']
#: rows of the official COCO-id class layers that mmdet's 80 classes drop:
#: class_embed (shared) and enc_out_class_embed, 91 -> 80 rows of 256
#: weights + 1 bias each, and label_enc, 92 -> 80 rows of 256
CLASS_ROWS = 2 * (91 - 80) * (256 + 1) + (92 - 80) * 256


@pytest.fixture(scope='module')
def fixture():
    return safe_load(FIXTURE)


_STATES = {}


def official_state(v):
    """The official state dict the fixture describes, regenerated (a new
    dict of the same tensors for each call; tests replace entries, never
    change a tensor in place)."""
    if v['seed'] not in _STATES:
        _STATES.clear()  # one R-50-sized state at a time
        _STATES[v['seed']] = _regenerate(v)
    return dict(_STATES[v['seed']])


def _regenerate(v):
    state = official_like_state(v['spec'], v['seed'])
    state.update(v['overrides'])
    for k, s in v['checksums'].items():
        got = float(state[k].double().sum())
        assert abs(got - s) <= 1e-6 * max(1.0, abs(s)), (
            f'{k}: regenerated weights differ from the fixture ({got} vs '
            f'{s})')
    return expand_aliases(state, v['aliases'])


def build(config, num_queries=None):
    cfg = Config.fromfile(osp.join(REPO, config))
    cfg.model.backbone.init_cfg = None  # no download
    if num_queries is not None:
        cfg.model.num_queries = num_queries
    return MODELS.build(cfg.model)


def variant_config(v):
    a = v['args']
    return CONFIGS[(a['enc_scale'], a['num_expansion'])]


def test_released_files_map_to_the_configs():
    # file names encode s = enc_scale, ex = num_expansion
    assert RELEASED == {
        'r50_s2ex3_49.9.pth': (2, 3),
        'r50_s3ex1_50.2.pth': (3, 1),
        'r50_s3ex3_50.4.pth': (3, 3)
    }
    assert CONFIGS[(2, 3)].endswith('lite-dino-h2l2-3blk_r50_8xb2-36e_coco.py')
    assert CONFIGS[(3, 1)].endswith('lite-dino-h3l1-1blk_r50_8xb2-36e_coco.py')
    assert CONFIGS[(3, 3)].endswith('lite-dino-h3l1-3blk_r50_8xb2-36e_coco.py')
    for (high, blocks), path in CONFIGS.items():
        enc = Config.fromfile(osp.join(REPO, path)).model.encoder
        assert (enc.num_high_levels, enc.num_blocks) == (high, blocks)


@pytest.mark.parametrize('config', sorted(CONFIGS.values()))
def test_config_matches_official_inference_settings(fixture, config):
    """Preprocessing, position embedding, query / detection counts and
    layer sizes of the configs are the official ones."""
    off = fixture['released_args']
    pre = fixture['eval_preprocessing']
    cfg = Config.fromfile(osp.join(REPO, config))
    m = cfg.model
    # official: RGB in [0, 1], normalised; mmdet: BGR 0-255 -> RGB
    dp = m.data_preprocessor
    assert dp.bgr_to_rgb
    assert dp.mean == pytest.approx([x * 255 for x in pre['mean']])
    assert dp.std == pytest.approx([x * 255 for x in pre['std']])
    resize = [t for t in cfg.test_pipeline if t.type == 'Resize']
    assert len(resize) == 1 and resize[0].keep_ratio
    assert tuple(resize[0].scale) == (pre['resize_max_size'],
                                      max(pre['resize_sizes']))
    pe = m.positional_encoding
    assert pe.temperature == off['pe_temperatureH'] == off['pe_temperatureW']
    assert pe.normalize and pe.get('offset', 0.0) == 0.0
    assert pe.num_feats * 2 == off['hidden_dim']
    assert m.num_queries == off['num_queries']
    assert m.test_cfg.max_per_img == off['num_select']
    assert m.neck.num_outs == off['num_feature_levels']
    assert m.get('num_feature_levels', 4) == off['num_feature_levels']
    assert list(m.backbone.out_indices) == off['return_interm_indices']
    assert m.encoder.num_layers == off['enc_layers']
    assert m.decoder.num_layers == off['dec_layers']
    assert m.encoder.layer_cfg.ffn_cfg.feedforward_channels == \
        off['dim_feedforward_enc']
    assert m.encoder.low_ffn_channels == off['hidden_dim']  # small_expand
    assert off['small_expand']
    dec = m.decoder.layer_cfg
    assert dec.ffn_cfg.feedforward_channels == off['dim_feedforward_dec']
    assert dec.self_attn_cfg.num_heads == off['nheads']
    for attn in (m.encoder.layer_cfg.self_attn_cfg, dec.cross_attn_cfg):
        assert attn.get('num_points', 4) == off['enc_n_points'] == \
            off['dec_n_points']
        assert attn.get('num_heads', 8) == off['nheads']
        assert attn.get('dropout', 0.1) == off['dropout']
    assert m.dn_cfg.label_noise_scale == off['dn_label_noise_ratio']
    assert m.dn_cfg.box_noise_scale == off['dn_box_noise_scale']
    assert m.dn_cfg.group_cfg.num_dn_queries == off['dn_number']
    head = m.bbox_head
    assert head.type == 'EffDINOHead' and head.inverse_sigmoid_eps == 1e-3
    assert head.dec_pred_class_embed_share and head.dec_pred_bbox_embed_share
    assert m.neck.bias is True


@pytest.mark.parametrize('name', VARIANTS)
def test_parameter_count_equals_official(fixture, name):
    """R-50 COCO configs: the official count apart from the class rows."""
    v = fixture['variants'][name]
    model = build(variant_config(v))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == v['num_trainable_params'] - CLASS_ROWS
    # the official FrozenBatchNorm2d keeps its affine weights as buffers;
    # mmdet's frozen BN has them as (frozen) parameters
    bn_affine = sum(
        p.numel() for m in model.modules()
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
        for p in m.parameters())
    total = sum(p.numel() for p in model.parameters())
    assert total - bn_affine == v['num_params'] - CLASS_ROWS


@pytest.mark.parametrize('name', VARIANTS)
def test_converted_outputs_equal_official(fixture, name):
    v = fixture['variants'][name]
    src = official_state(v)
    config = default_config(src, dict(args=argparse.Namespace(**v['args'])))
    assert config == variant_config(v)
    model = build(config, num_queries=v['args']['num_queries'])
    assert model.bbox_head.test_cfg['max_per_img'] == v['args']['num_select']
    conv = convert(src)
    check_against_model(conv, model.state_dict())  # every key consumed
    model.load_state_dict(conv.out, strict=True)
    model.eval()

    img = v['input']
    h, w = img.shape[-2:]
    samples = det_samples([(h, w)])
    ids = torch.tensor(COCO_IDS)
    with torch.no_grad():
        cls, box = model(img, samples, mode='tensor')
        # two-stage proposals (the decoder's first references)
        feats = model.extract_feat(img)
        enc_in, _ = model.pre_transformer(feats, samples)
        dec_in, _ = model.pre_decoder(
            **model.forward_encoder(**enc_in), batch_data_samples=samples)
        results = model.predict(img, samples)[0].pred_instances

    # every decoder layer: class scores (mmdet classes = COCO-id columns)
    # and boxes
    assert cls.shape == (6, 1, v['args']['num_queries'], 80)
    cls_diff = (cls[:, 0] - v['logits'][..., ids]).abs().amax((1, 2))
    box_diff = (box[:, 0] - v['boxes']).abs().amax((1, 2))
    assert cls_diff.max() <= TOL, cls_diff
    assert box_diff.max() <= TOL, box_diff
    enc_diff = (dec_in['reference_points'][0] -
                v['enc_boxes']).abs().max()
    assert enc_diff <= TOL

    # final detections: top-300 over queries x classes
    off_labels = v['det_labels'].tolist()
    assert set(off_labels) <= set(COCO_IDS)  # unused ids never win
    labels = torch.tensor([COCO_IDS.index(i) for i in off_labels])
    assert (results.scores - v['det_scores']).abs().max() <= TOL
    # mmdet clamps boxes to the image, the official PostProcess does not
    off_boxes = v['det_boxes'].clone()
    off_boxes[:, 0::2] = off_boxes[:, 0::2].clamp(0, w)
    off_boxes[:, 1::2] = off_boxes[:, 1::2].clamp(0, h)
    # detections of exactly equal official score may come in either order
    ours = _tie_order(v['det_scores'], results.labels, results.bboxes)
    official = _tie_order(v['det_scores'], labels, off_boxes)
    assert torch.equal(results.labels[ours], labels[official])
    scale = torch.tensor([w, h, w, h], dtype=torch.float32)
    assert ((results.bboxes[ours] - off_boxes[official]) /
            scale).abs().max() <= TOL


def _tie_order(ref_scores, labels, boxes):
    """A permutation that keeps the ranking of ``ref_scores`` and orders
    each group of exactly equal scores by (label, box)."""
    group = torch.unique_consecutive(ref_scores, return_inverse=True)[1]
    keys = [(int(g), int(lb), *b.tolist())
            for g, lb, b in zip(group, labels, boxes.round(decimals=2))]
    return torch.tensor(sorted(range(len(keys)), key=keys.__getitem__))


@pytest.mark.parametrize('name', VARIANTS)
def test_box_head_matches_official_at_saturated_references(fixture, name):
    """Near the image borders (references below 1e-3 / above 0.999) the
    box head's inverse_sigmoid eps matters: the configs use the official
    one (random weights never get there, so feed such references)."""
    v = fixture['variants'][name]
    head = build(variant_config(v), num_queries=10).bbox_head.eval()
    probe, official = fixture['inverse_sigmoid_probe']
    refs = probe.view(1, -1, 1).expand(1, -1, 4)
    hidden = torch.randn(1, 1, probe.numel(), 256)
    with torch.no_grad():
        _, boxes = head(hidden, [refs])
        delta = head.reg_branches[0](hidden[0])
    expected = (delta + official.view(1, -1, 1)).sigmoid()
    assert (boxes[0] - expected).abs().max() <= 1e-6
    # mmdet's default eps (1e-5) would move these boxes by up to ~1e-3
    head.inverse_sigmoid_eps = 1e-5
    with torch.no_grad():
        _, mmdet_boxes = head(hidden, [refs])
    assert (mmdet_boxes[0] - expected).abs().max() > 1e-4


def test_config_from_shapes_without_args(fixture):
    s3ex3 = official_state(fixture['variants']['r50_s3ex3'])
    with pytest.raises(ConversionError, match='enc_scale'):
        default_config(s3ex3)
    args = argparse.Namespace(enc_scale=1, num_expansion=3, key_aware=True)
    with pytest.raises(ConversionError, match='enc_scale=1'):
        default_config(s3ex3, dict(args=args))
    s3ex1 = official_state(fixture['variants']['r50_s3ex1'])
    assert default_config(s3ex1) == CONFIGS[(3, 1)]


def test_unshared_heads_are_refused_by_a_shared_config(fixture):
    v = fixture['variants']['r50_s3ex1']
    src = official_state(v)
    src['class_embed.2.bias'] = src['class_embed.2.bias'] + 1
    src['transformer.decoder.class_embed.2.bias'] = src['class_embed.2.bias']
    conv = convert(src)
    model_state = build(variant_config(v), v['args']['num_queries']) \
        .state_dict()
    with pytest.raises(ConversionError, match='cls_branches.2.bias'):
        check_against_model(conv, model_state)


def _save_official(v, path, **changes):
    """An official-format checkpoint file of the released size (the
    fixture's 30 queries padded to the released 900)."""
    state = official_state(v)
    key = 'transformer.tgt_embed.weight'
    state[key] = torch.cat([state[key], state[key].new_zeros(870, 256)])
    for k, val in changes.items():
        if val is None:
            del state[k]
        else:
            state[k] = val
    torch.save(
        dict(model=state, args=argparse.Namespace(**v['args']), epoch=35),
        path)


def test_cli(fixture, tmp_path):
    v = fixture['variants']['r50_s3ex1']
    src = str(tmp_path / 'r50_s3ex1_50.2.pth')
    dst = str(tmp_path / 'converted.pth')
    _save_official(v, src)
    out = python_tool(TOOL, src, dst).stdout
    assert 'lite-dino-h3l1-1blk_r50_8xb2-36e_coco.py' in out
    ckpt = safe_load(dst)
    assert ckpt['meta']['dataset_meta']['classes'][0] == 'person'
    assert len(ckpt['meta']['dataset_meta']['classes']) == 80
    model = build(CONFIGS[(3, 1)])
    model.load_state_dict(ckpt['state_dict'], strict=True)


@pytest.mark.parametrize('change,message', [
    (dict(extra_key=torch.zeros(1)), 'extra_key'),
    ({'transformer.enc_output.bias': None}, 'memory_trans_fc.bias'),
])
def test_cli_names_bad_keys(fixture, tmp_path, capsys, change, message):
    v = fixture['variants']['r50_s3ex1']
    src = str(tmp_path / 'bad.pth')
    _save_official(v, src, **change)
    with pytest.raises(SystemExit):
        main([src, str(tmp_path / 'out.pth')])
    assert message in capsys.readouterr().err
    assert not osp.exists(tmp_path / 'out.pth')
