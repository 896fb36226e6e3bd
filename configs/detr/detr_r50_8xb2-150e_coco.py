# mmdet's DETR R50 150e on COCO, on the registry-aware EffDETR base.
_base_ = 'mmdet::detr/detr_r50_8xb2-150e_coco.py'
custom_imports = dict(imports=['efficient_detr_mm'], allow_failed_imports=False)
# crash-safe checkpoint saves (efficient_detr_mm/engine/checkpoint_hook.py)
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))

model = dict(type='EffDETR')

# base_batch_size = (8 GPUs) x (2 samples per GPU)
auto_scale_lr = dict(enable=False, base_batch_size=16)
