# Focus-DETR R101 4-scale, 36 epochs: the R50 36-epoch config (position
# embedding temperature 20 / offset 0) with a depth-101 backbone.
# NOTE: detrex's focus_detr_r101_4scale_36ep.py is a copy of the R50 36-epoch
# "v3" config (3x schedule) that never sets depth 101; the released weights
# (focus_detr_r101_4scale_36ep_v2.zip) are an R-101 model (see README.md).
# Inference does not depend on the schedule.
_base_ = './focus-detr-4scale_r50_8xb2-36e_coco.py'

model = dict(
    backbone=dict(
        depth=101,
        init_cfg=dict(type='Pretrained',
                      checkpoint='torchvision://resnet101')))
