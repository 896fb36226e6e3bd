# Tiny Lite-Deformable-DETR (3+1)x2 (HHAHHA) for synthetic shapes.
_base_ = './lite-deformable-detr-h3l1-3blk_r18-tiny_1xb4-12e_shapes.py'
model = dict(encoder=dict(num_blocks=2, num_high_levels=3))
