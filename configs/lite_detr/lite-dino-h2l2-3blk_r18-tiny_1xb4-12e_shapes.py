# Tiny Lite-DINO H2L2-(2+1)x3 (HAHAHA, 2 high levels) for synthetic shapes.
_base_ = './lite-dino-h3l1-3blk_r18-tiny_1xb4-12e_shapes.py'
model = dict(encoder=dict(num_blocks=3, num_high_levels=2))
