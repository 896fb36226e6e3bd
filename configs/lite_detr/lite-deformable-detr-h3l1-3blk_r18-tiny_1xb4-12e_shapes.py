# Tiny Lite-Deformable-DETR H3L1-(2+1)x3 for the synthetic-shapes dataset:
# trains on a CPU.  Same architecture as
# lite-deformable-detr-h3l1-3blk_r50_16xb2-50e_coco.py (6 encoder layers,
# HAHAHA, KDA in encoder and decoder), shrunk like
# configs/deformable_detr/deformable-detr-refine-twostage_r18-tiny_1xb4-12e_shapes.py.
_base_ = [
    './lite-deformable-detr-h3l1-3blk_r50_16xb2-50e_coco.py',
    '../_base_/datasets/shapes_detection.py'
]
embed_dims = 128
model = dict(
    num_queries=100,
    backbone=dict(
        depth=18,
        frozen_stages=-1,
        norm_cfg=dict(type='BN', requires_grad=True),
        norm_eval=False,
        init_cfg=None),
    neck=dict(in_channels=[128, 256, 512], out_channels=embed_dims),
    encoder=dict(
        low_ffn_channels=embed_dims,
        layer_cfg=dict(
            self_attn_cfg=dict(embed_dims=embed_dims),
            ffn_cfg=dict(embed_dims=embed_dims, feedforward_channels=256))),
    decoder=dict(
        num_layers=3,
        layer_cfg=dict(
            self_attn_cfg=dict(embed_dims=embed_dims),
            cross_attn_cfg=dict(embed_dims=embed_dims),
            ffn_cfg=dict(embed_dims=embed_dims, feedforward_channels=256))),
    positional_encoding=dict(num_feats=embed_dims // 2),
    bbox_head=dict(num_classes=6, embed_dims=embed_dims))

train_dataloader = dict(_base_.shapes_train_dataloader, _delete_=True)
val_dataloader = dict(_base_.shapes_val_dataloader, _delete_=True)
test_dataloader = val_dataloader
val_evaluator = dict(_base_.shapes_val_evaluator, _delete_=True)
test_evaluator = val_evaluator

max_epochs = 12
train_cfg = dict(max_epochs=max_epochs, val_interval=4)
param_scheduler = [
    dict(type='MultiStepLR', end=max_epochs, by_epoch=True, milestones=[10])
]
default_hooks = dict(
    logger=dict(interval=20), checkpoint=dict(interval=4, max_keep_ckpts=2))
# base_batch_size = (1 process) x (4 samples)
auto_scale_lr = dict(enable=False, base_batch_size=4)
