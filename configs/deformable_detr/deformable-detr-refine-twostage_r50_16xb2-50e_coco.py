# mmdet's two-stage Deformable-DETR with box refinement, R50 50e on COCO, on
# the registry-aware EffDeformableDETR base.
_base_ = 'mmdet::deformable_detr/deformable-detr-refine-twostage_r50_16xb2-50e_coco.py'  # noqa
custom_imports = dict(imports=['efficient_detr_mm'], allow_failed_imports=False)
# crash-safe checkpoint saves (efficient_detr_mm/engine/checkpoint_hook.py)
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))

model = dict(type='EffDeformableDETR')

# base_batch_size = (16 GPUs) x (2 samples per GPU)
auto_scale_lr = dict(enable=False, base_batch_size=32)
