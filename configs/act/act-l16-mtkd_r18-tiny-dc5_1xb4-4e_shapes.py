# Tiny ACT (L = 16) + MTKD fine-tuning for synthetic shapes (CPU).  Point
# load_from at a tiny DETR-DC5 checkpoint, e.g.
#   --cfg-options load_from=work_dirs/detr_r18-tiny-dc5_1xb4-12e_shapes/epoch_12.pth
_base_ = './act-l16_r18-tiny-dc5_1xb4-12e_shapes.py'

load_from = None
custom_hooks = [
    dict(
        type='MTKDHook',
        distill_loss=dict(type='MTKDLoss', loss_type='mse', loss_weight=1.0))
]
max_epochs = 4
train_cfg = dict(max_epochs=max_epochs, val_interval=2)
param_scheduler = [
    dict(type='MultiStepLR', end=max_epochs, by_epoch=True, milestones=[3])
]
optim_wrapper = dict(optimizer=dict(lr=5e-5))
default_hooks = dict(checkpoint=dict(interval=2, max_keep_ckpts=1))
