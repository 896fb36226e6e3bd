# Focus-DETR Swin-T 4-scale, 24 epochs (detrex
# focus_detr_swin_tiny_224_4scale_24ep.py: lr x0.1 after epoch 20).
_base_ = './focus-detr-4scale_swin-t_8xb2-12e_coco.py'

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
