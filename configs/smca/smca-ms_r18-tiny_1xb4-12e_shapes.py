# Tiny multi-scale SMCA-DETR for synthetic shapes: trains on a CPU. The tiny
# single-scale SMCA (smca_r18-tiny_1xb4-12e_shapes.py) with the multi-scale
# settings of smca-ms_r50_8xb1-50e_coco.py: ResNet-18 C4 / C5 + an extra
# stride-64 level and a 3-layer intra / multi / intra encoder (the paper's
# 2+1+2 shrunk).
_base_ = './smca_r18-tiny_1xb4-12e_shapes.py'
embed_dims = _base_.embed_dims
model = dict(
    feat_strides=(16, 32, 64),
    backbone=dict(out_indices=(2, 3)),
    neck=dict(
        _delete_=True,
        type='ChannelMapper',
        in_channels=[256, 512],
        kernel_size=1,
        out_channels=embed_dims,
        act_cfg=None,
        norm_cfg=dict(type='GN', num_groups=32),
        num_outs=3),
    encoder=dict(
        type='SMCAMultiScaleEncoder',
        num_layers=3,
        layer_types=('intra', 'multi', 'intra')),
    decoder=dict(layer_cfg=dict(gaussian_cfg=dict(num_levels=3))))
