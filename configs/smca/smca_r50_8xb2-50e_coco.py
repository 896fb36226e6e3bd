# Single-scale SMCA-DETR, R50 (C5, stride 32), 50 epochs (paper / official
# README: 41.0 AP). DETR + spatially modulated co-attention (per-head x/y
# scales, "type3", beta 8), boxes relative to the Gaussian centre, 300
# queries, sigmoid focal loss and costs 2 / 5 / 2, AdamW 1e-4 (backbone
# 1e-5), weight decay 1e-4, gradient clip 0.1, lr drop at epoch 40.
_base_ = 'mmdet::detr/detr_r50_8xb2-150e_coco.py'
custom_imports = dict(imports=['efficient_detr_mm'], allow_failed_imports=False)

model = dict(
    type='SMCADETR',
    num_queries=300,
    feat_strides=(32, ),
    decoder=dict(
        type='SMCADecoder',
        layer_cfg=dict(
            # cross_attn_cfg without type: SMCACoAttention
            gaussian_cfg=dict(
                num_levels=1, modulation='per_head_xy', beta=8.0))),
    bbox_head=dict(
        type='SMCAHead',
        loss_cls=dict(
            _delete_=True,
            type='FocalLoss',
            use_sigmoid=True,
            gamma=2.0,
            alpha=0.25,
            loss_weight=2.0)),
    train_cfg=dict(
        assigner=dict(
            type='HungarianAssigner',
            match_costs=[
                dict(type='FocalLossCost', weight=2.0),
                dict(type='BBoxL1Cost', weight=5.0, box_format='xywh'),
                dict(type='IoUCost', iou_mode='giou', weight=2.0)
            ])),
    # official post-processing: top-N_q over (query x class) sigmoid
    # scores, boxes not clipped to the image
    test_cfg=dict(max_per_img=300, clip_boxes=False))

max_epochs = 50
train_cfg = dict(
    type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=1)
param_scheduler = [
    dict(
        type='MultiStepLR',
        begin=0,
        end=max_epochs,
        by_epoch=True,
        milestones=[40],
        gamma=0.1)
]

# base_batch_size = (8 GPUs) x (2 samples per GPU)
auto_scale_lr = dict(enable=False, base_batch_size=16)
