# Tiny single-scale SMCA-DETR for synthetic shapes: trains on a CPU. The tiny
# DETR (configs/detr/detr_r18-tiny_1xb4-12e_shapes.py: data, schedule,
# ResNet-18 from scratch, 128-d transformer, 2 encoder / 2 decoder layers,
# 50 queries, so that the two compare in projects/shapes/convergence_study.py)
# with the SMCA settings of smca_r50_8xb2-50e_coco.py.
_base_ = '../detr/detr_r18-tiny_1xb4-12e_shapes.py'
model = dict(
    type='SMCADETR',
    feat_strides=(32, ),
    decoder=dict(
        type='SMCADecoder',
        layer_cfg=dict(
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
    # official post-processing: boxes not clipped to the image
    test_cfg=dict(max_per_img=100, clip_boxes=False))
