"""MTKD: the distillation loss, ACTDETR's MTKD mode and MTKDHook (C2)."""
import copy
import logging
import types

import pytest
import torch
from helpers import det_samples, load_config
from mmdet.registry import HOOKS, MODELS

from efficient_detr_mm.act import ACTDETR, MTKDLoss, act_enabled

CFG = 'act/act-l16_r18-tiny-dc5_1xb4-12e_shapes.py'


def test_mtkd_loss_hand_computed():
    s = torch.zeros(2, 1, 1, 4)
    t = torch.zeros(2, 1, 1, 4)
    s[-1, ..., 0] = 0.4  # last layer: one coordinate off by 0.4
    s[0, ..., 1] = 0.2  # first layer: one coordinate off by 0.2
    mse = MTKDLoss()(s, t)['loss_kd']
    assert mse.item() == pytest.approx(0.16 / 4)
    l1 = MTKDLoss(loss_type='l1', loss_weight=2.0)(s, t)['loss_kd']
    assert l1.item() == pytest.approx(2.0 * 0.4 / 4)
    every = MTKDLoss(all_layers=True)(s, t)['loss_kd']
    assert every.item() == pytest.approx((0.16 + 0.04) / 8)
    cls_s = torch.zeros(2, 1, 1, 3)
    out = MTKDLoss(cls_weight=1.0)(s, t, cls_s, cls_s.clone())
    assert out['loss_kd_cls'].item() == pytest.approx(0.0, abs=1e-7)
    with pytest.raises(ValueError, match='loss_type'):
        MTKDLoss(loss_type='kl')


def _model_and_batch():
    torch.manual_seed(0)
    model = MODELS.build(load_config(CFG).model)
    model.init_weights()
    model.train()
    samples = det_samples([(96, 128), (80, 100)],
                          boxes=[[[10, 10, 50, 60]], [[5, 8, 40, 30]]],
                          labels=[[1], [3]])
    data = model.data_preprocessor(
        dict(
            inputs=[torch.randint(0, 255, (3, 96, 128), dtype=torch.uint8),
                    torch.randint(0, 255, (3, 80, 100), dtype=torch.uint8)],
            data_samples=samples), True)
    return model, data['inputs'], data['data_samples']


def _backward(losses):
    total = sum(v for k, v in losses.items() if 'loss' in k)
    total.backward()
    return total


@pytest.mark.parametrize('train_teacher', [True, False])
def test_shared_weights_mtkd_losses_and_no_unused_parameters(train_teacher):
    model, inputs, samples = _model_and_batch()
    model.set_mtkd(train_teacher_branch=train_teacher)
    losses = model.loss(inputs, copy.deepcopy(samples))
    keys = set(losses)
    assert {'student.loss_cls', 'student.loss_bbox', 'student.loss_iou',
            'loss_kd'} <= keys
    assert ('teacher.loss_cls' in keys) == train_teacher
    assert all(torch.isfinite(v).all() for v in losses.values())
    _backward(losses)
    unused = [
        n for n, p in model.named_parameters()
        if p.requires_grad and p.grad is None
    ]
    assert unused == []  # DDP without find_unused_parameters works
    # the switch is restored: ACT on for evaluation
    assert all(m.enabled for m in model.act_layers())
    assert model.act_layers()[0].last_num_prototypes is not None


def test_distillation_gradient_follows_teacher_detach():
    model, inputs, samples = _model_and_batch()
    for m in model.act_layers():
        m.seed = 0  # same clusters in both runs
    model.set_mtkd(
        student_weight=0.0, teacher_weight=0.0, teacher_detach=True)
    losses = model.loss(inputs, copy.deepcopy(samples))
    assert losses['loss_kd'].requires_grad
    # teacher = same weights with ACT off, so with the teacher detached the
    # KD gradient only reaches the parameters through the student branch;
    # weights 0 for the set losses: grads come from loss_kd only
    _backward(losses)
    g_detached = model.query_embedding.weight.grad.clone()
    model.zero_grad()
    model.set_mtkd(
        student_weight=0.0, teacher_weight=0.0, teacher_detach=False)
    losses = model.loss(inputs, copy.deepcopy(samples))
    _backward(losses)
    g_both = model.query_embedding.weight.grad
    assert not torch.allclose(g_detached, g_both)


def test_set_mtkd_rejects_unknown_option():
    model, _, _ = _model_and_batch()
    with pytest.raises(ValueError, match='allowed'):
        model.set_mtkd(kd_weight=1.0)


def _runner(model):
    cfg = types.SimpleNamespace(model=copy.deepcopy(load_config(CFG).model))
    return types.SimpleNamespace(
        model=model, cfg=cfg, logger=logging.getLogger('mtkd-test'))


def test_hook_with_frozen_teacher_from_checkpoint(tmp_path):
    model, inputs, samples = _model_and_batch()
    torch.manual_seed(1)
    teacher_src = MODELS.build(load_config(CFG).model)
    teacher_src.init_weights()
    ckpt = str(tmp_path / 'teacher.pth')
    torch.save(dict(state_dict=teacher_src.state_dict(), meta=dict()), ckpt)
    hook = HOOKS.build(dict(type='MTKDHook', teacher_checkpoint=ckpt))
    keys_before = set(model.state_dict())
    n_params = len(list(model.parameters()))
    hook.before_train(_runner(model))
    teacher = model._mtkd['teacher']
    assert isinstance(teacher, ACTDETR) and not teacher.training
    assert torch.equal(teacher.query_embedding.weight,
                       teacher_src.query_embedding.weight)
    assert all(not p.requires_grad for p in teacher.parameters())
    # the teacher is not part of the student (state dict, DDP params)
    assert set(model.state_dict()) == keys_before
    assert len(list(model.parameters())) == n_params
    losses = model.loss(inputs, copy.deepcopy(samples))
    assert not any(k.startswith('teacher.') for k in losses)
    assert 'loss_kd' in losses and 'student.loss_cls' in losses
    _backward(losses)
    assert all(p.grad is None for p in teacher.parameters())
    hook.after_train(_runner(model))
    assert not model.mtkd_enabled


def test_hook_needs_an_act_detector_and_valid_loss():
    hook = HOOKS.build(dict(type='MTKDHook'))
    with pytest.raises(TypeError, match='ACTDETR'):
        hook.before_train(_runner(torch.nn.Linear(2, 2)))
    with pytest.raises(ValueError, match='loss_type'):
        HOOKS.build(
            dict(
                type='MTKDHook',
                distill_loss=dict(type='MTKDLoss', loss_type='huber')))


def _official_name(key):
    """Hand-written inverse map: mmdet DETR name -> facebookresearch/detr
    name."""
    reps = [('backbone.', 'backbone.0.body.'),
            ('neck.convs.0.conv.', 'input_proj.'),
            ('query_embedding.', 'query_embed.'),
            ('decoder.post_norm.', 'transformer.decoder.norm.'),
            ('bbox_head.fc_cls.', 'class_embed.'),
            ('bbox_head.reg_ffn.layers.0.0.', 'bbox_embed.layers.0.'),
            ('bbox_head.reg_ffn.layers.1.', 'bbox_embed.layers.1.'),
            ('bbox_head.fc_reg.', 'bbox_embed.layers.2.')]
    for a, b in reps:
        if key.startswith(a):
            return b + key[len(a):]
    part, _, idx, rest = key.split('.', 3)
    for a, b in [('self_attn.attn.', 'self_attn.'),
                 ('cross_attn.attn.', 'multihead_attn.'),
                 ('ffn.layers.0.0.', 'linear1.'), ('ffn.layers.1.',
                                                   'linear2.'),
                 ('norms.0.', 'norm1.'), ('norms.1.', 'norm2.'),
                 ('norms.2.', 'norm3.')]:
        if rest.startswith(a):
            return f'transformer.{part}.layers.{idx}.{b}{rest[len(a):]}'
    raise KeyError(key)


def test_official_detr_checkpoint_converts_to_act_detr():
    from efficient_detr_mm.converters import COCO_IDS
    from efficient_detr_mm.converters.detr import convert_detr
    cfg = load_config('act/act-l32_r50-dc5_8xb2-500e_coco.py').model
    cfg.backbone.init_cfg = None
    model = MODELS.build(cfg)
    official = {}
    for k, v in model.state_dict().items():
        if k.endswith('num_batches_tracked'):
            continue  # frozen BN of the official backbone has none
        official[_official_name(k)] = torch.randn_like(v.float())
    # 92 COCO-id logits: row i is filled with i
    official['class_embed.weight'] = torch.arange(92.)[:, None].expand(
        92, 256).clone()
    official['class_embed.bias'] = torch.arange(92.)
    converted = convert_detr(official).out
    res = model.load_state_dict(converted, strict=True)
    assert not res.missing_keys and not res.unexpected_keys
    bias = model.bbox_head.fc_cls.bias
    assert bias.tolist() == [float(i) for i in COCO_IDS] + [91.0]
    assert torch.equal(
        model.encoder.layers[3].self_attn.attn.in_proj_weight,
        official['transformer.encoder.layers.3.self_attn.in_proj_weight'])


def test_teacher_without_dropout_is_the_eval_mode_teacher(monkeypatch):
    model, inputs, samples = _model_and_batch()
    seen = []
    orig = model.bbox_head.loss_by_feat

    def spy(cls, box, *args):
        seen.append(box.detach())
        return orig(cls, box, *args)

    monkeypatch.setattr(model.bbox_head, 'loss_by_feat', spy)
    model.set_mtkd(teacher_dropout=False)
    model.loss(inputs, copy.deepcopy(samples))
    assert model.encoder.training and model.decoder.training  # restored
    with torch.no_grad(), act_enabled(model, False):
        feats = model.extract_feat(inputs)  # train-mode BN, as in loss()
        model.encoder.eval(), model.decoder.eval()
        ref = model.bbox_head(
            **model.forward_transformer(feats, copy.deepcopy(samples)))[1]
    torch.testing.assert_close(seen[0], ref)
