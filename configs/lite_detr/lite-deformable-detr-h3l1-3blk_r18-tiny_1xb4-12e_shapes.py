# Tiny Lite-Deformable-DETR H3L1-(2+1)x3 for the synthetic-shapes dataset:
# trains on a CPU.  The tiny Deformable DETR
# (configs/deformable_detr/deformable-detr-refine-twostage_r18-tiny_1xb4-12e_shapes.py:
# data, schedule, ResNet-18 from scratch, 128-d transformer, 3 decoder
# layers, 100 queries) with the settings of
# lite-deformable-detr-h3l1-3blk_r50_16xb2-50e_coco.py (6 encoder layers,
# HAHAHA, KDA in encoder and decoder); the low-level FFN is 128 wide.
_base_ = '../deformable_detr/deformable-detr-refine-twostage_r18-tiny_1xb4-12e_shapes.py'  # noqa
embed_dims = _base_.embed_dims
model = dict(
    type='LiteDeformableDETR',
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
    decoder=dict(layer_cfg=dict(cross_attn_cfg=dict(type='KDAttention'))))
