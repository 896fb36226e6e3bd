# mmdet's DINO-4scale R50 12e on COCO, built on the registry-aware EffDINO
# base (identical outputs to mmdet's DINO with the same weights).
_base_ = 'mmdet::dino/dino-4scale_r50_8xb2-12e_coco.py'
custom_imports = dict(imports=['efficient_detr_mm'], allow_failed_imports=False)
# crash-safe checkpoint saves (efficient_detr_mm/engine/checkpoint_hook.py)
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))

model = dict(type='EffDINO')

# base_batch_size = (8 GPUs) x (2 samples per GPU); `--auto-scale-lr` enables
auto_scale_lr = dict(enable=False, base_batch_size=16)
