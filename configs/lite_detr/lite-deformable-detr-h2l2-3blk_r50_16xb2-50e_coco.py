# Lite-Deformable-DETR H2L2-(2+1)x3 (HAHAHA, high-level tokens = the 2
# smallest maps).
_base_ = './lite-deformable-detr-h3l1-3blk_r50_16xb2-50e_coco.py'
model = dict(encoder=dict(num_blocks=3, num_high_levels=2))
