# Focus-DETR R50 4-scale, 36 epochs (focus_detr_r50_4scale_36ep.py with the
# noah-research `lr_multiplier_24_36ep`: lr x0.1 after epoch 20).
# NOTE: the released R50-36ep weights (50.4 AP) are probably from detrex's
# 3x schedule (x0.1 at 210k it = epoch 28, x0.01 at 250k it, 1000-it
# warm-up); see README.md. Positional embedding: temperature 20, offset 0.
_base_ = './focus-detr-4scale_r50_8xb2-24e_coco.py'

max_epochs = 36
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
