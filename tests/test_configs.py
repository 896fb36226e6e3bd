"""Every config parses, carries custom_imports and auto_scale_lr, and builds.
"""
import glob
import os.path as osp

import pytest
from helpers import REPO, load_config
from mmdet.registry import MODELS

CONFIGS = sorted(
    osp.relpath(p, osp.join(REPO, 'configs'))
    for p in glob.glob(osp.join(REPO, 'configs', '*', '*.py'))
    if '/_base_/' not in p)


def test_baselines_exist():
    for name in ('dino/dino-4scale_r50_8xb2-12e_coco.py',
                 'deformable_detr/deformable-detr-refine-twostage_r50_16xb2-50e_coco.py',  # noqa
                 'detr/detr_r50_8xb2-150e_coco.py',
                 'detr/detr_r50-dc5_8xb2-500e_coco.py'):
        assert name in CONFIGS
        stem = osp.basename(name).split('_')[0]
        assert any(c.startswith(osp.dirname(name) + '/' + stem) and
                   c.endswith('_shapes.py') for c in CONFIGS), name


@pytest.mark.parametrize('rel', CONFIGS)
def test_config_parses_and_builds(rel):
    cfg = load_config(rel)
    assert cfg.custom_imports.imports == ['efficient_detr_mm']
    assert cfg.custom_imports.allow_failed_imports is False
    assert 'enable' in cfg.auto_scale_lr and \
        'base_batch_size' in cfg.auto_scale_lr
    if rel.endswith('_shapes.py'):
        assert cfg.train_dataloader.dataset.data_root == 'data/shapes/'
        assert cfg.model.bbox_head.num_classes == 6
    else:
        assert 'coco' in cfg.train_dataloader.dataset.data_root
    model_cfg = cfg.model
    model_cfg.backbone.init_cfg = None  # no download in tests
    model = MODELS.build(model_cfg)
    assert model.__class__.__name__ == cfg.model.type


def test_dc5_backbone_dilated():
    cfg = load_config('detr/detr_r50-dc5_8xb2-500e_coco.py')
    assert tuple(cfg.model.backbone.strides) == (1, 2, 2, 1)
    assert tuple(cfg.model.backbone.dilations) == (1, 1, 1, 2)
    assert cfg.train_cfg.max_epochs == 500


BASELINE_SHAPES = [
    c for c in CONFIGS if c.endswith('_shapes.py') and c.split('/')[0] in (
        'detr', 'deformable_detr', 'dino')
]


@pytest.mark.parametrize('rel', BASELINE_SHAPES)
def test_baseline_shapes_config_trains(rel):
    """A few optimiser steps of the tiny model on one fixed batch lower the
    loss (the model, optimiser and losses of the config work on CPU)."""
    import torch
    from helpers import det_samples
    from mmengine.optim import build_optim_wrapper
    torch.manual_seed(0)
    cfg = load_config(rel)
    model = MODELS.build(cfg.model)
    model.init_weights()
    model.train()
    optim = build_optim_wrapper(model, cfg.optim_wrapper)
    inputs = torch.rand(2, 3, 96, 96)
    samples = det_samples([(96, 96), (96, 80)],
                          boxes=[[[8, 8, 60, 50], [50, 40, 90, 90]],
                                 [[20, 10, 70, 80]]],
                          labels=[[0, 3], [5]])
    losses = []
    for _ in range(6):
        loss, _ = model.parse_losses(model.loss(inputs, samples))
        optim.update_params(loss)
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert min(losses[-2:]) < losses[0], losses
