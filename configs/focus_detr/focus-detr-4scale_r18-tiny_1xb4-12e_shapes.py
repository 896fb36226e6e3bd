# Tiny Focus-DETR-4scale for the synthetic-shapes dataset: trains on a CPU.
# The tiny DINO (configs/dino/dino-4scale_r18-tiny_1xb4-12e_shapes.py: data,
# schedule, ResNet-18 from scratch, 128-d transformer with 2 encoder /
# 3 decoder layers, 100 queries) with the Focus-DETR settings of
# focus-detr-4scale_r50_8xb2-12e_coco.py; 64 OESM tokens per layer and a
# two-layer cascade for the short encoder.
_base_ = '../dino/dino-4scale_r18-tiny_1xb4-12e_shapes.py'
embed_dims = _base_.embed_dims
model = dict(
    type='FocusDETR',
    encoder=dict(
        _delete_=True,
        type='FocusEncoder',
        num_layers=2,
        num_fine_tokens=64,
        mc_score='logit_product',
        value_source='backbone',
        layer_cfg=dict(
            self_attn_cfg=dict(
                embed_dims=embed_dims, num_levels=4, dropout=0.0),
            oesm_cfg=dict(embed_dims=embed_dims, num_heads=8, dropout=0.0),
            ffn_cfg=dict(
                embed_dims=embed_dims, feedforward_channels=256,
                ffn_drop=0.0))),
    selector=dict(
        type='ForegroundTokenSelector',
        keep_ratio=0.5,
        cascade=[1.0, 0.6],
        per_image_budget=False,
        align_corners=True,
        alpha_init=0.3),
    fts_loss=dict(
        type='FTSLoss',
        strides=[8, 16, 32, 64],
        ranges='code',
        scale_measure='ltrb_max',
        alpha=0.25,
        gamma=2.0,
        loss_weight=1.5),
    positional_encoding=dict(temperature=10000, offset=-0.5),
    # as the detrex model (see focus-detr-4scale_r50_8xb2-12e_coco.py)
    neck=dict(bias=True),
    bbox_head=dict(type='EffDINOHead', inverse_sigmoid_eps=1e-3))

# as the Focus-DETR COCO configs: no weight decay on normalisation layers;
# NOTE the backbone keeps the COCO configs' lr x0.1 here (the tiny DINO
# trains its from-scratch backbone at x1.0)
optim_wrapper = dict(
    paramwise_cfg=dict(
        custom_keys={'backbone': dict(lr_mult=0.1)}, norm_decay_mult=0.0))
