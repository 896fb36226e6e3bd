# Lite-DINO H2L2-(2+1)x3: high-level tokens = the 2 smallest maps (~6 % of
# the tokens), 3 blocks (HAHAHA).
_base_ = './lite-dino-h3l1-3blk_r50_8xb2-36e_coco.py'
model = dict(encoder=dict(num_blocks=3, num_high_levels=2))
