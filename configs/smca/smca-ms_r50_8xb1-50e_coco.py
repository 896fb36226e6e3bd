# Multi-scale SMCA-DETR as the paper describes it (attention encoder),
# R50, 50 epochs (paper / README: 43.7 AP).
# Features at strides 16 / 32 / 64: C4 and C5 through 1x1 convs plus a
# 3x3 / stride-2 conv on C5 (ChannelMapper's extra level), GroupNorm.
# Encoder: 5 layers intra, intra, multi, intra, intra (intra layers share
# their weights across scales), FFN 1024. Decoder: one Gaussian per (query,
# head, scale), per-scale softmax mixed by per-image alpha = softmax(FC(q)).
# 8 GPUs x 1 image, top-500 post-processing (official multi-scale code).
_base_ = './smca_r50_8xb2-50e_coco.py'

model = dict(
    feat_strides=(16, 32, 64),
    backbone=dict(out_indices=(2, 3)),
    neck=dict(
        _delete_=True,
        type='ChannelMapper',
        in_channels=[1024, 2048],
        kernel_size=1,
        out_channels=256,
        act_cfg=None,
        norm_cfg=dict(type='GN', num_groups=32),
        num_outs=3),
    encoder=dict(
        type='SMCAMultiScaleEncoder',
        num_layers=5,
        layer_types=('intra', 'intra', 'multi', 'intra', 'intra'),
        layer_cfg=dict(ffn_cfg=dict(feedforward_channels=1024))),
    decoder=dict(
        layer_cfg=dict(
            ffn_cfg=dict(feedforward_channels=1024),
            gaussian_cfg=dict(num_levels=3))),
    test_cfg=dict(max_per_img=500))

train_dataloader = dict(batch_size=1)

# base_batch_size = (8 GPUs) x (1 sample per GPU)
auto_scale_lr = dict(enable=False, base_batch_size=8)
