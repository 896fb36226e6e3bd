# Focus-DETR R101 4-scale, 12 epochs (detrex focus_detr_r101_4scale_12ep.py:
# the R50 12-epoch config with a depth-101 backbone, torchvision ImageNet
# weights).
_base_ = './focus-detr-4scale_r50_8xb2-12e_coco.py'

model = dict(
    backbone=dict(
        depth=101,
        init_cfg=dict(type='Pretrained',
                      checkpoint='torchvision://resnet101')))
