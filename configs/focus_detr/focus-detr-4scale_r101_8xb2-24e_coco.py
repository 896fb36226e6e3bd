# Focus-DETR R101 4-scale, 24 epochs (detrex focus_detr_r101_4scale_24ep.py:
# the R50 24-epoch config, i.e. position embedding temperature 20 / offset 0,
# with a depth-101 backbone).
_base_ = './focus-detr-4scale_r50_8xb2-24e_coco.py'

model = dict(
    backbone=dict(
        depth=101,
        init_cfg=dict(type='Pretrained',
                      checkpoint='torchvision://resnet101')))
