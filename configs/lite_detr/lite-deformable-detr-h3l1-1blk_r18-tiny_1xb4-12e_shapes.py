# Tiny Lite-Deformable-DETR (6+1)x1 (HHHHHA) for synthetic shapes.
_base_ = './lite-deformable-detr-h3l1-3blk_r18-tiny_1xb4-12e_shapes.py'
model = dict(encoder=dict(num_blocks=1, num_high_levels=3))
