# Multi-scale SMCA-DETR (paper's attention encoder), R50, 108 epochs
# (paper abstract: 45.6 AP). lr drop at epoch 80 (not given officially; as
# the single-scale 108e config).
_base_ = './smca-ms_r50_8xb1-50e_coco.py'

max_epochs = 108
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(
        type='MultiStepLR',
        begin=0,
        end=max_epochs,
        by_epoch=True,
        milestones=[80],
        gamma=0.1)
]
