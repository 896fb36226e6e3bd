# Tiny multi-scale SMCA-DETR for synthetic shapes: trains on a CPU.
# ResNet-18 C4 / C5 + an extra stride-64 level, 128-d transformer, a
# 3-layer intra / multi / intra encoder (the paper's 2+1+2 shrunk),
# 2 decoder layers, 50 queries.
_base_ = [
    './smca-ms_r50_8xb1-50e_coco.py', '../_base_/datasets/shapes_detection.py'
]
embed_dims = 128
model = dict(
    num_queries=50,
    backbone=dict(
        depth=18,
        frozen_stages=-1,
        norm_cfg=dict(type='BN', requires_grad=True),
        norm_eval=False,
        init_cfg=None),
    neck=dict(in_channels=[256, 512], out_channels=embed_dims),
    encoder=dict(
        num_layers=3,
        layer_types=('intra', 'multi', 'intra'),
        layer_cfg=dict(
            self_attn_cfg=dict(embed_dims=embed_dims),
            ffn_cfg=dict(embed_dims=embed_dims, feedforward_channels=256))),
    decoder=dict(
        num_layers=2,
        layer_cfg=dict(
            self_attn_cfg=dict(embed_dims=embed_dims),
            cross_attn_cfg=dict(embed_dims=embed_dims),
            ffn_cfg=dict(embed_dims=embed_dims, feedforward_channels=256))),
    positional_encoding=dict(num_feats=embed_dims // 2),
    bbox_head=dict(num_classes=6, embed_dims=embed_dims),
    test_cfg=dict(max_per_img=100))

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
