# Focus-DETR (ICCV 2023) R50 4-scale, 12 epochs, COCO.
# Official hyper-parameters (detrex projects/focus_detr,
# configs/models/focus_detr_r50.py + focus_detr_r50_4scale_12ep.py) on top of
# mmdet's DINO-4scale R50 12e config: same backbone, neck, decoder, CDN,
# matcher and head; the encoder is a FocusEncoder fed by the FTS.
_base_ = '../dino/dino-4scale_r50_8xb2-12e_coco.py'

model = dict(
    type='FocusDETR',
    # detectron2 freeze_at=1 freezes the stem only (mmdet's DINO config
    # freezes the stem and res2); BN stays frozen everywhere
    backbone=dict(frozen_stages=0),
    # detrex's ChannelMapper convolutions have biases (before GroupNorm);
    # mmdet's default ('auto') drops them when a norm follows
    neck=dict(bias=True),
    # detrex's box head takes inverse_sigmoid(reference, eps=1e-3) (mmdet's
    # DINOHead 1e-5): differs where a reference is within 1e-3 of a border
    bbox_head=dict(type='EffDINOHead', inverse_sigmoid_eps=1e-3),
    encoder=dict(
        _delete_=True,
        type='FocusEncoder',
        num_layers=6,
        num_fine_tokens=300,  # OESM tokens per layer ("topk_sa")
        mc_score='logit_product',  # code; 'prob_product' = paper text
        value_source='backbone',  # code; 'memory' = MindSpore / Sparse DETR
        layer_cfg=dict(
            self_attn_cfg=dict(embed_dims=256, num_levels=4, dropout=0.0),
            oesm_cfg=dict(embed_dims=256, num_heads=8, dropout=0.0),
            ffn_cfg=dict(
                embed_dims=256, feedforward_channels=2048, ffn_drop=0.0))),
    selector=dict(
        type='ForegroundTokenSelector',
        keep_ratio=0.5,  # "focus_rho"
        cascade=[1.0, 0.8, 0.6, 0.6, 0.4, 0.2],  # "cascade_set"
        per_image_budget=False,  # official batch-max budget
        align_corners=True,
        alpha_init=0.3),
    fts_loss=dict(
        type='FTSLoss',
        strides=[8, 16, 32, 64],
        ranges='code',  # (-1,64], (64,128], (128,256], (256,inf)
        scale_measure='ltrb_max',  # code; 'center_chebyshev' = paper text
        alpha=0.25,
        gamma=2.0,
        loss_weight=1.5),
    # the 12-epoch detrex config keeps detrex's DINO default embedding
    positional_encoding=dict(
        num_feats=128, normalize=True, temperature=10000, offset=-0.5))

# detectron2 drops images without annotations when training
train_dataloader = dict(dataset=dict(filter_cfg=dict(filter_empty_gt=True)))

# detrex: no weight decay on normalisation layers (weight_decay_norm=0)
optim_wrapper = dict(
    paramwise_cfg=dict(
        custom_keys={'backbone': dict(lr_mult=0.1)}, norm_decay_mult=0.0))

# base_batch_size = (8 GPUs) x (2 samples per GPU)
auto_scale_lr = dict(enable=False, base_batch_size=16)
