# ACT (L = 24) + MTKD: a few-epoch fine-tuning of DETR-DC5 R50 in which one
# set of weights is trained with the encoder run with ACT off (teacher) and on
# (student), plus a box distillation between them (MTKDHook).  The paper does
# not state the schedule; 5 epochs at lr 1e-5 is this package's choice.
_base_ = './act-l24_r50-dc5_8xb2-500e_coco.py'

# the DETR-DC5 checkpoint to fine-tune (e.g. the output of
# configs/detr/detr_r50-dc5_8xb2-500e_coco.py); override with
# --cfg-options load_from=...
load_from = 'work_dirs/detr_r50-dc5_8xb2-500e_coco/epoch_500.pth'

custom_hooks = [
    dict(
        type='MTKDHook',
        student_weight=1.0,
        teacher_weight=1.0,
        train_teacher_branch=True,
        teacher_detach=True,
        distill_loss=dict(
            type='MTKDLoss', loss_type='mse', loss_weight=1.0,
            all_layers=False))
]

max_epochs = 5
train_cfg = dict(max_epochs=max_epochs, val_interval=1)
param_scheduler = [
    dict(type='MultiStepLR', end=max_epochs, by_epoch=True, milestones=[4])
]
optim_wrapper = dict(optimizer=dict(lr=1e-5))
default_hooks = dict(checkpoint=dict(interval=1, max_keep_ckpts=2))
