# Tiny DINO-4scale for the synthetic-shapes dataset: trains on a CPU.
# Same architecture as dino-4scale_r50_8xb2-12e_coco.py, shrunk: ResNet-18
# from scratch, 128-d transformer with 2 encoder / 3 decoder layers, 100
# queries, native ~200 px images.
_base_ = [
    './dino-4scale_r50_8xb2-12e_coco.py',
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
        num_layers=2,
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
    bbox_head=dict(num_classes=6, embed_dims=embed_dims),
    dn_cfg=dict(group_cfg=dict(num_dn_queries=20)),
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
# the backbone is trained from scratch here: no 0.1 lr multiplier for it
optim_wrapper = dict(
    optimizer=dict(lr=2e-4),
    paramwise_cfg=dict(custom_keys={'backbone': dict(lr_mult=1.0)}))
default_hooks = dict(
    logger=dict(interval=20), checkpoint=dict(interval=4, max_keep_ckpts=2))
# base_batch_size = (1 process) x (4 samples)
auto_scale_lr = dict(enable=False, base_batch_size=4)
