"""tools/dist_train.sh trains with 2 CPU processes (gloo)."""
import os.path as osp
import sys

from helpers import run_tool, shapes_options


def test_dist_train_two_processes_cpu(shapes_root, tmp_path):
    work = str(tmp_path / 'dist')
    cfg = 'configs/dino/dino-4scale_r18-tiny_1xb4-12e_shapes.py'
    out = run_tool([
        'bash', 'tools/dist_train.sh', cfg, '2', '--work-dir', work,
        '--cfg-options', *shapes_options(shapes_root, epochs=1, batch_size=2)
    ],
                   env=dict(PYTHON=sys.executable, PORT='29531')).stdout
    assert 'Distributed training: True' in out
    assert 'GPU number: 2' in out  # mmengine's name for the world size
    assert "type='CPUDistributedDataParallel'" in out
    # find_unused_parameters=False: DDP raises from the 2nd iteration on if a
    # parameter got no gradient in the 1st
    assert 'find_unused_parameters=False' in out
    # 8 images / (2 procs x 2 per proc) = 2 iterations in the epoch
    assert osp.exists(osp.join(work, 'epoch_1.pth'))
    assert 'Epoch(train) [1][2/2]' in out
