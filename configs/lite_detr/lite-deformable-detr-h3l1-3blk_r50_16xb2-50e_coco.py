# Lite-Deformable-DETR H3L1-(2+1)x3, R50, 50 epochs on COCO (Lite DETR,
# CVPR 2023, Table 3).  The base is the two-stage Deformable DETR with box
# refinement (FFN 1024, dropout 0.1), as inferred from the paper's AP and
# parameter counts (the code was not released); the interleaved encoder with
# a 256-hidden low-level FFN and key-aware deformable attention in the
# encoder and the decoder cross-attention, as in Lite-DINO.
_base_ = '../deformable_detr/deformable-detr-refine-twostage_r50_16xb2-50e_coco.py'  # noqa

model = dict(
    type='LiteDeformableDETR',
    decoder_key_aware=True,
    encoder=dict(
        type='InterleavedLiteEncoder',
        num_layers=6,
        num_blocks=3,  # B of (A+1)xB
        num_high_levels=3,  # H3L1
        low_ffn_channels=256,
        low_level_queries_only=False,
        layer_cfg=dict(
            type='LiteEncoderLayer',
            self_attn_cfg=dict(type='KDAttention'))),
    decoder=dict(layer_cfg=dict(cross_attn_cfg=dict(type='KDAttention'))))

# base_batch_size = (16 GPUs) x (2 samples per GPU)
auto_scale_lr = dict(enable=False, base_batch_size=32)
