# Focus-DETR Swin-T (224, IN-1k) 4-scale, 12 epochs (detrex
# configs/models/focus_detr_swin_tiny_224.py + focus_detr_swin_tiny_224_4scale
# _12ep.py): the R50 12-epoch model (position embedding temperature 10000,
# offset -0.5 in every Swin-T row) with detectron2's Swin-T (drop path 0.1,
# stages 1-3 out) as mmdet's SwinTransformer.
_base_ = './focus-detr-4scale_r50_8xb2-12e_coco.py'

pretrained = 'https://github.com/SwinTransformer/storage/releases/download/v1.0.0/swin_tiny_patch4_window7_224.pth'  # noqa
model = dict(
    backbone=dict(
        _delete_=True,
        type='SwinTransformer',
        pretrain_img_size=224,
        embed_dims=96,
        depths=[2, 2, 6, 2],
        num_heads=[3, 6, 12, 24],
        window_size=7,
        mlp_ratio=4,
        qkv_bias=True,
        qk_scale=None,
        drop_rate=0.,
        attn_drop_rate=0.,
        drop_path_rate=0.1,
        patch_norm=True,
        out_indices=(1, 2, 3),
        with_cp=False,
        convert_weights=True,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[192, 384, 768]))
