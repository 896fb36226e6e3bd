# Lite-DINO H3L1-(6+1)x1: one block of 5 high-level-only layers and one
# all-token layer (HHHHHA).
_base_ = './lite-dino-h3l1-3blk_r50_8xb2-36e_coco.py'
model = dict(encoder=dict(num_blocks=1, num_high_levels=3))
