"""EffDINOHead: mmdet's DINOHead by default, plus the official DINO
``inverse_sigmoid`` eps and decoder-layer head sharing."""
import pytest
import torch
from mmdet.registry import MODELS

from efficient_detr_mm.common import EffDINOHead

DIMS, CLASSES, DEC_LAYERS = 32, 5, 3


def _head_cfg(head_type='EffDINOHead', **kwargs):
    # what mmdet's DINO detector passes to its head (two-stage, refine)
    kwargs.setdefault('share_pred_layer', False)
    return dict(
        type=head_type,
        num_classes=CLASSES,
        embed_dims=DIMS,
        num_pred_layer=DEC_LAYERS + 1,
        as_two_stage=True,
        sync_cls_avg_factor=True,
        loss_cls=dict(
            type='FocalLoss',
            use_sigmoid=True,
            gamma=2.0,
            alpha=0.25,
            loss_weight=1.0),
        loss_bbox=dict(type='L1Loss', loss_weight=5.0),
        loss_iou=dict(type='GIoULoss', loss_weight=2.0),
        train_cfg=dict(
            assigner=dict(
                type='HungarianAssigner',
                match_costs=[
                    dict(type='FocalLossCost', weight=2.0),
                    dict(type='BBoxL1Cost', weight=5.0, box_format='xywh'),
                    dict(type='IoUCost', iou_mode='giou', weight=2.0)
                ])),
        test_cfg=dict(max_per_img=20),
        **kwargs)


def _inputs(seed=0, saturate=False):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(DEC_LAYERS, 2, 7, DIMS, generator=g)
    refs = [
        0.01 + 0.98 * torch.rand(2, 7, 4, generator=g)
        for _ in range(DEC_LAYERS + 1)
    ]
    if saturate:
        # references beyond 1e-3 / 0.999 (image borders of trained models)
        refs[0][0, 0] = torch.tensor([2e-4, 0.9996, 1e-6, 5e-4])
        refs[1][1, 3] = torch.tensor([0.9999, 3e-4, 0.5, 0.9992])
    return hidden, refs


def _randomise(head, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in head.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)


def test_defaults_equal_mmdet_dino_head():
    ref = MODELS.build(_head_cfg('DINOHead'))
    ours = MODELS.build(_head_cfg())
    assert isinstance(ours, EffDINOHead)
    assert list(ours.state_dict()) == list(ref.state_dict())
    _randomise(ref)
    ours.load_state_dict(ref.state_dict(), strict=True)
    hidden, refs = _inputs(saturate=True)
    for a, b in zip(ref(hidden, refs), ours(hidden, refs)):
        assert torch.equal(a, b)
    metas = [dict(img_shape=(40, 60), scale_factor=(1., 1.))] * 2
    cls, box = ref(hidden, refs)
    r = ref.predict_by_feat(cls, box, metas)
    o = ours.predict_by_feat(*ours(hidden, refs), metas)
    for a, b in zip(r, o):
        for k in ('scores', 'labels', 'bboxes'):
            assert torch.equal(a[k], b[k])


def _mlp_params(d):
    # 2 x Linear(d, d) + Linear(d, 4), with biases
    return 2 * (d * d + d) + (d * 4 + 4)


@pytest.mark.parametrize('cls_share,box_share', [(False, False),
                                                 (True, True),
                                                 (True, False),
                                                 (False, True)])
def test_sharing_parameter_count(cls_share, box_share):
    head = MODELS.build(
        _head_cfg(
            dec_pred_class_embed_share=cls_share,
            dec_pred_bbox_embed_share=box_share))
    fc = DIMS * CLASSES + CLASSES
    n_cls = 2 if cls_share else DEC_LAYERS + 1  # shared + encoder-output
    n_box = 2 if box_share else DEC_LAYERS + 1
    count = sum(p.numel() for p in head.parameters())
    assert count == n_cls * fc + n_box * _mlp_params(DIMS)
    # decoder layers share one module, the encoder-output one is separate
    cls_ids = {id(m) for m in head.cls_branches[:DEC_LAYERS]}
    box_ids = {id(m) for m in head.reg_branches[:DEC_LAYERS]}
    assert len(cls_ids) == (1 if cls_share else DEC_LAYERS)
    assert len(box_ids) == (1 if box_share else DEC_LAYERS)
    assert id(head.cls_branches[DEC_LAYERS]) not in cls_ids
    assert id(head.reg_branches[DEC_LAYERS]) not in box_ids
    # mmdet's state-dict names in every layout
    ref = MODELS.build(_head_cfg('DINOHead'))
    assert list(head.state_dict()) == list(ref.state_dict())


def test_shared_head_is_used_by_every_layer():
    head = MODELS.build(
        _head_cfg(
            dec_pred_class_embed_share=True, dec_pred_bbox_embed_share=True))
    head.init_weights()
    _randomise(head)
    hidden, refs = _inputs()
    hidden[:] = hidden[0]
    refs[1:DEC_LAYERS] = [refs[0]] * (DEC_LAYERS - 1)
    cls, box = head(hidden, refs)
    for i in range(1, DEC_LAYERS):
        assert torch.equal(cls[i], cls[0])
        assert torch.equal(box[i], box[0])
    # the encoder-output branch is not the shared one
    enc = head.cls_branches[DEC_LAYERS](hidden[0])
    assert not torch.allclose(enc, cls[0])


def test_sharing_with_share_pred_layer_fails():
    with pytest.raises(ValueError, match='share_pred_layer'):
        MODELS.build(
            _head_cfg(
                share_pred_layer=True, dec_pred_class_embed_share=True))


@pytest.mark.parametrize('key,value', [
    ('inverse_sigmoid_eps', 0.0), ('inverse_sigmoid_eps', 0.7),
    ('inverse_sigmoid_eps', '1e-3'), ('dec_pred_class_embed_share', 1),
    ('dec_pred_bbox_embed_share', 'yes')
])
def test_bad_options_name_the_key(key, value):
    with pytest.raises(ValueError, match=key):
        MODELS.build(_head_cfg(**{key: value}))


def test_inverse_sigmoid_eps_only_moves_saturated_references():
    a = MODELS.build(_head_cfg())
    b = MODELS.build(_head_cfg(inverse_sigmoid_eps=1e-3))
    _randomise(a)
    b.load_state_dict(a.state_dict())
    hidden, refs = _inputs(saturate=True)
    cls_a, box_a = a(hidden, refs)
    cls_b, box_b = b(hidden, refs)
    assert torch.equal(cls_a, cls_b)
    stacked = torch.stack(refs[:DEC_LAYERS])
    saturated = (stacked < 1e-3) | (stacked > 1 - 1e-3)
    assert saturated.sum() == 7
    assert torch.equal(box_a[~saturated], box_b[~saturated])
    assert (box_a[saturated] != box_b[saturated]).all()
    # expected: sigmoid(delta + logit(reference clamped to [eps, 1 - eps]))
    delta = torch.stack(
        [b.reg_branches[i](hidden[i]) for i in range(DEC_LAYERS)])
    with torch.no_grad():
        expected = (delta + torch.logit(stacked, eps=1e-3)).sigmoid()
    torch.testing.assert_close(box_b, expected, rtol=0, atol=1e-5)
