# Lite-Deformable-DETR H3L1-(3+1)x2 (HHAHHA).
_base_ = './lite-deformable-detr-h3l1-3blk_r50_16xb2-50e_coco.py'
model = dict(encoder=dict(num_blocks=2, num_high_levels=3))
