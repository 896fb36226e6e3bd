# Focus-DETR R50 4-scale, 24 epochs (detrex focus_detr_r50_4scale_24ep.py):
# lr x0.1 after epoch 20; the position embedding uses temperature 20 and
# offset 0 (mmdet's DINO default).
_base_ = './focus-detr-4scale_r50_8xb2-12e_coco.py'

model = dict(
    positional_encoding=dict(
        num_feats=128, normalize=True, temperature=20, offset=0.0))

max_epochs = 24
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(
        type='MultiStepLR',
        begin=0,
        end=max_epochs,
        by_epoch=True,
        milestones=[20],
        gamma=0.1)
]
auto_scale_lr = dict(enable=False, base_batch_size=16)
