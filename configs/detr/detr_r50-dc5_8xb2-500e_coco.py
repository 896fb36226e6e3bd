# DETR-DC5 R50 500e on COCO (DETR paper: 43.3 AP): the last ResNet stage is
# dilated (stride 16 instead of 32), everything else as mmdet's DETR 500e.
# This is the model ACT is evaluated on.  DilatedResNet dilates the stage as
# torchvision does for the official DETR-DC5 (its first block undilated, the
# later blocks dilation 2), so the converted official weights run exactly;
# boxes are not clipped to the image, as the official DETR post-processing
# (test_cfg.clip_boxes=True is mmdet's DETRHead).
_base_ = 'mmdet::detr/detr_r50_8xb2-500e_coco.py'
custom_imports = dict(imports=['efficient_detr_mm'], allow_failed_imports=False)
# crash-safe checkpoint saves (efficient_detr_mm/engine/checkpoint_hook.py)
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))

model = dict(
    type='EffDETR',
    backbone=dict(
        type='DilatedResNet', strides=(1, 2, 2, 1), dilations=(1, 1, 1, 2)),
    bbox_head=dict(type='EffDETRHead'),
    test_cfg=dict(clip_boxes=False))

# base_batch_size = (8 GPUs) x (2 samples per GPU)
auto_scale_lr = dict(enable=False, base_batch_size=16)
