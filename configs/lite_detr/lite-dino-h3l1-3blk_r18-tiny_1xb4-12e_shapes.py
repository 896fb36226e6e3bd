# Tiny Lite-DINO H3L1-(2+1)x3 for the synthetic-shapes dataset: trains on a
# CPU.  The tiny DINO (configs/dino/dino-4scale_r18-tiny_1xb4-12e_shapes.py:
# data, schedule, ResNet-18 from scratch, 128-d transformer, 3 decoder
# layers, 100 queries) with the Lite-DINO settings of
# lite-dino-h3l1-3blk_r50_8xb2-36e_coco.py (6 encoder layers, HAHAHA, KDA in
# encoder and decoder); the low-level FFN is 128 wide.
_base_ = '../dino/dino-4scale_r18-tiny_1xb4-12e_shapes.py'
embed_dims = _base_.embed_dims
model = dict(
    type='LiteDINO',
    decoder_key_aware=True,
    encoder=dict(
        type='InterleavedLiteEncoder',
        num_layers=6,
        num_blocks=3,
        num_high_levels=3,
        low_ffn_channels=embed_dims,
        low_level_queries_only=False,
        layer_cfg=dict(
            type='LiteEncoderLayer',
            self_attn_cfg=dict(type='KDAttention'))),
    decoder=dict(layer_cfg=dict(cross_attn_cfg=dict(type='KDAttention'))),
    # as the official model (see lite-dino-h3l1-3blk_r50_8xb2-36e_coco.py)
    neck=dict(bias=True),
    bbox_head=dict(
        type='EffDINOHead',
        inverse_sigmoid_eps=1e-3,
        dec_pred_class_embed_share=True,
        dec_pred_bbox_embed_share=True))

# NOTE the backbone keeps the COCO configs' lr x0.1 here (the tiny DINO
# trains its from-scratch backbone at x1.0)
optim_wrapper = dict(
    paramwise_cfg=dict(custom_keys={'backbone': dict(lr_mult=0.1)}))
