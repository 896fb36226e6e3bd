"""The registry-aware bases equal mmdet's detectors and honour ``type``."""
import copy

import pytest
import torch
from helpers import det_samples, load_config
from mmcv.ops import MultiScaleDeformableAttention
from mmdet.registry import MODELS
from torch import nn

from efficient_detr_mm.common import build_or_default

FAMILIES = [
    ('EffDETR', 'DETR', 'detr/detr_r18-tiny_1xb4-12e_shapes.py'),
    ('EffDeformableDETR', 'DeformableDETR',
     'deformable_detr/deformable-detr-refine-twostage_r18-tiny_1xb4-12e_shapes.py'),  # noqa
    ('EffDINO', 'DINO', 'dino/dino-4scale_r18-tiny_1xb4-12e_shapes.py'),
]


def _pair(plugin_type, mmdet_type, cfg_path):
    cfg = load_config(cfg_path).model
    if mmdet_type != 'DETR':
        # mmdet's two-stage DeformableDETR and DINO only support 256-d
        _set_embed_dims(cfg, 256)
    assert cfg.type == plugin_type
    mm_cfg = copy.deepcopy(cfg)
    mm_cfg.type = mmdet_type
    torch.manual_seed(0)
    ref = MODELS.build(mm_cfg)
    ref.init_weights()
    ours = MODELS.build(copy.deepcopy(cfg))
    assert type(ours).__name__ == plugin_type
    assert type(ref).__name__ == mmdet_type
    # same parameter names and shapes: mmdet checkpoints load strictly
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ref.eval(), ours.eval()


def _set_embed_dims(cfg, c):
    for part in (cfg.encoder.layer_cfg, cfg.decoder.layer_cfg):
        for v in part.values():
            if isinstance(v, dict) and 'embed_dims' in v:
                v.embed_dims = c
    cfg.neck.out_channels = c
    cfg.positional_encoding.num_feats = c // 2
    cfg.bbox_head.embed_dims = c


@pytest.mark.parametrize('plugin_type,mmdet_type,cfg_path', FAMILIES)
def test_plugin_base_bit_identical_to_mmdet(plugin_type, mmdet_type,
                                            cfg_path):
    ref, ours = _pair(plugin_type, mmdet_type, cfg_path)
    # two differently sized images: exercises the padding masks too
    torch.manual_seed(1)
    inputs = torch.rand(2, 3, 96, 128)
    samples = det_samples([(96, 128), (80, 100)])
    with torch.no_grad():
        out_ref = ref._forward(inputs, copy.deepcopy(samples))
        out_ours = ours._forward(inputs, copy.deepcopy(samples))
        pred_ref = ref.predict(inputs, copy.deepcopy(samples))
        pred_ours = ours.predict(inputs, copy.deepcopy(samples))
    for a, b in zip(out_ref, out_ours):
        a = a if isinstance(a, (list, tuple)) else [a]
        b = b if isinstance(b, (list, tuple)) else [b]
        for x, y in zip(a, b):
            assert torch.equal(x, y)
    for p, q in zip(pred_ref, pred_ours):
        assert torch.equal(p.pred_instances.bboxes, q.pred_instances.bboxes)
        assert torch.equal(p.pred_instances.scores, q.pred_instances.scores)


@pytest.mark.parametrize('plugin_type,mmdet_type,cfg_path', FAMILIES)
def test_plugin_base_same_losses(plugin_type, mmdet_type, cfg_path):
    ref, ours = _pair(plugin_type, mmdet_type, cfg_path)
    ref.train()
    ours.train()
    inputs = torch.rand(1, 3, 96, 96)
    samples = det_samples([(96, 96)], boxes=[[[10, 12, 60, 70]]],
                          labels=[[2]])
    torch.manual_seed(3)
    loss_ref = ref.loss(inputs, copy.deepcopy(samples))
    torch.manual_seed(3)
    loss_ours = ours.loss(inputs, copy.deepcopy(samples))
    assert loss_ref.keys() == loss_ours.keys()
    for k in loss_ref:
        assert torch.equal(loss_ref[k], loss_ours[k]), k


@MODELS.register_module(force=True)
class _MarkedAttention(MultiScaleDeformableAttention):
    """An MSDA with a recognisable own init, to test init discipline."""
    keeps_own_init = True

    def init_weights(self):
        super().init_weights()
        nn.init.constant_(self.output_proj.weight, 0.125)


@MODELS.register_module(force=True)
class _MarkedFFN(nn.Module):
    """A non-MSDA module that declares its own init."""
    keeps_own_init = True

    def __init__(self, embed_dims=128, **kwargs):
        super().__init__()
        self.fc = nn.Linear(embed_dims, embed_dims)

    def init_weights(self):
        nn.init.constant_(self.fc.weight, 0.25)

    def forward(self, x, identity=None):
        return x + self.fc(x)


@pytest.mark.parametrize('cfg_path', [f[2] for f in FAMILIES])
def test_tiny_128d_models_run(cfg_path):
    # mmdet's DINO / two-stage Deformable-DETR fail below 256-d; ours not
    model = MODELS.build(load_config(cfg_path).model).eval()
    assert model.embed_dims == 128
    with torch.no_grad():
        preds = model.predict(torch.rand(1, 3, 96, 96), det_samples([(96,
                                                                      96)]))
    assert preds[0].pred_instances.bboxes.shape[-1] == 4


def test_type_builds_from_registry_and_keeps_own_init():
    cfg = load_config('dino/dino-4scale_r18-tiny_1xb4-12e_shapes.py').model
    cfg.encoder.layer_cfg.self_attn_cfg.type = '_MarkedAttention'
    cfg.encoder.layer_cfg.ffn_cfg = dict(type='_MarkedFFN', embed_dims=128)
    model = MODELS.build(cfg)
    model.init_weights()
    for layer in model.encoder.layers:
        assert type(layer.self_attn).__name__ == '_MarkedAttention'
        assert torch.all(layer.self_attn.output_proj.weight == 0.125)
        assert torch.all(layer.ffn.fc.weight == 0.25)
    # decoder layers without `type` keep mmcv's classes
    for layer in model.decoder.layers:
        assert type(layer.cross_attn) is MultiScaleDeformableAttention


def test_encoder_type_at_every_level():
    cfg = load_config('detr/detr_r18-tiny_1xb4-12e_shapes.py').model
    cfg.encoder.type = 'EffDetrTransformerEncoder'
    cfg.encoder.layer_cfg.type = 'EffDetrTransformerEncoderLayer'
    cfg.encoder.layer_cfg.self_attn_cfg.type = 'MultiheadAttention'
    model = MODELS.build(cfg)
    assert len(model.encoder.layers) == cfg.encoder.num_layers


def test_build_or_default_does_not_mutate_config():
    from mmcv.cnn.bricks.transformer import FFN
    cfg = dict(embed_dims=8, feedforward_channels=16)
    m = build_or_default(cfg, FFN)
    assert isinstance(m, FFN) and cfg == dict(
        embed_dims=8, feedforward_channels=16)
    cfg = dict(type='FFN', embed_dims=8, feedforward_channels=16)
    assert isinstance(build_or_default(cfg, nn.Identity), FFN)
    assert cfg['type'] == 'FFN'


def test_wrong_positional_width_fails_clearly():
    cfg = load_config('detr/detr_r18-tiny_1xb4-12e_shapes.py').model
    cfg.positional_encoding.num_feats = 32
    with pytest.raises(ValueError, match='num_feats'):
        MODELS.build(cfg)
