# Tiny ACT (L = 32) on the tiny DETR-DC5 for synthetic shapes (CPU): the model
# of configs/detr/detr_r18-tiny-dc5_1xb4-12e_shapes.py with ACT in every
# encoder layer (as act-l32_r50-dc5_8xb2-500e_coco.py does for DETR-DC5), so
# the tiny DETR's checkpoints evaluate here unchanged:
#   python tools/test.py configs/act/act-l32_r18-tiny-dc5_1xb4-12e_shapes.py \
#       work_dirs/detr_r18-tiny-dc5_1xb4-12e_shapes/epoch_12.pth
_base_ = '../detr/detr_r18-tiny-dc5_1xb4-12e_shapes.py'
model = dict(type='ACTDETR', act_cfg=dict(num_hashes=32))
