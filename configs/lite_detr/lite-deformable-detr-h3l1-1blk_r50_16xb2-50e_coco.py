# Lite-Deformable-DETR H3L1-(6+1)x1 (HHHHHA).
_base_ = './lite-deformable-detr-h3l1-3blk_r50_16xb2-50e_coco.py'
model = dict(encoder=dict(num_blocks=1, num_high_levels=3))
