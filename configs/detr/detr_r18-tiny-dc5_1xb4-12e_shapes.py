# Tiny DETR-DC5 for synthetic shapes: the tiny DETR with the last ResNet
# stage dilated (stride 16 instead of 32), as detr_r50-dc5_8xb2-500e_coco.py
# does to DETR R50 (torchvision's rule: first block of the stage undilated;
# official post-processing: boxes not clipped); trains on a CPU. The base of
# the tiny ACT configs.
_base_ = './detr_r18-tiny_1xb4-12e_shapes.py'

model = dict(
    backbone=dict(
        type='DilatedResNet', strides=(1, 2, 2, 1), dilations=(1, 1, 1, 2)),
    bbox_head=dict(type='EffDETRHead'),
    test_cfg=dict(clip_boxes=False))
