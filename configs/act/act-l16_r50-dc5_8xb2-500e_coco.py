# ACT (L = 16 hash rounds) in every encoder layer of DETR-DC5 R50, evaluated
# WITHOUT retraining: ACT adds no parameter, so the DETR-DC5 checkpoint loads
# unchanged.  Paper (COCO val, batch 1): see README.md.
#   python tools/test.py configs/act/act-l16_r50-dc5_8xb2-500e_coco.py \
#       path/to/detr_r50-dc5_500e.pth
_base_ = '../detr/detr_r50-dc5_8xb2-500e_coco.py'

model = dict(
    type='ACTDETR',
    # faithful defaults (bucket width 8, offsets U[0,1), 2-bit packing,
    # fresh projections per call); seed=<int> makes evaluation reproducible
    act_cfg=dict(num_hashes=16))

# the paper evaluates at batch size 1 (no padded tokens)
val_dataloader = dict(batch_size=1)
test_dataloader = val_dataloader
