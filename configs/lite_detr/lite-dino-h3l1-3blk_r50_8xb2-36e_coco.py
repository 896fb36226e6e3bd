# Lite-DINO H3L1-(2+1)x3, R50, 36 epochs on COCO (Lite DETR, CVPR 2023).
# DINO-4scale with the interleaved encoder (high-level tokens = the 3
# smallest maps; 3 blocks of [H, A] layers, i.e. HAHAHA), a 256-hidden FFN
# for the low-level tokens and key-aware deformable attention in the encoder
# and the decoder cross-attention (the released `key_aware=True`).
# Released training: AdamW 1e-4, wd 1e-4, backbone lr x0.1, clip 0.1,
# 8 GPUs x 2 images, 36 epochs, lr x0.1 at epoch 30.
# As the official DINO code base (IDEA-Research/Lite-DETR): the input
# projections have conv biases before their GroupNorm; one class head and
# one box head are shared by the 6 decoder layers
# (`dec_pred_class_embed_share` / `dec_pred_bbox_embed_share`), the
# encoder-output (two-stage) heads are separate; the box head turns the
# references into logits with inverse_sigmoid eps 1e-3.  Converted official
# checkpoints: tools/model_converters/lite_dino_to_mmdet.py.
_base_ = '../dino/dino-4scale_r50_8xb2-12e_coco.py'

model = dict(
    type='LiteDINO',
    decoder_key_aware=True,
    neck=dict(bias=True),
    bbox_head=dict(
        type='EffDINOHead',
        inverse_sigmoid_eps=1e-3,
        dec_pred_class_embed_share=True,
        dec_pred_bbox_embed_share=True),
    encoder=dict(
        type='InterleavedLiteEncoder',
        num_layers=6,
        num_blocks=3,  # B of (A+1)xB
        num_high_levels=3,  # H3L1
        low_ffn_channels=256,  # `small_expand`
        low_level_queries_only=False,  # released code: A layers query all
        layer_cfg=dict(
            type='LiteEncoderLayer',
            self_attn_cfg=dict(type='KDAttention'))),
    decoder=dict(layer_cfg=dict(cross_attn_cfg=dict(type='KDAttention'))))

max_epochs = 36
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(
        type='MultiStepLR',
        begin=0,
        end=max_epochs,
        by_epoch=True,
        milestones=[30],
        gamma=0.1)
]

# base_batch_size = (8 GPUs) x (2 samples per GPU)
auto_scale_lr = dict(enable=False, base_batch_size=16)
