"""Reliability (issue 14): no silent overwrite of a dataset, no silent
partial checkpoint load, configuration errors at build time, clear errors on
degenerate inputs and launch environments."""
import json
import os
import os.path as osp
import runpy
import sys

import pytest
import torch
from helpers import REPO

MAKE_SHAPES = osp.join(REPO, 'tools', 'dataset_converters', 'make_shapes.py')


def _run_script(path, *args):
    """Run a tool's ``__main__`` in this process; return its exit code."""
    argv = sys.argv
    sys.argv = [path, *args]
    try:
        runpy.run_path(path, run_name='__main__')
    except SystemExit as e:
        return e.code
    finally:
        sys.argv = argv
    return 0


# ----------------------------------------------------- 2. no silent overwrite
@pytest.mark.parametrize('args, msg', [
    (('--num-train', '-5'), 'argument --num-train: must be at least 1'),
    (('--max-objects', '0'), 'argument --max-objects: must be at least 1'),
    (('--empty-prob', '2'), 'argument --empty-prob: must be in [0, 1]'),
])
def test_make_shapes_refuses_invalid_counts(tmp_path, capsys, args, msg):
    out = str(tmp_path / 'd')
    assert _run_script(MAKE_SHAPES, '--out', out, *args) == 2  # argparse
    err = capsys.readouterr().err
    assert msg in err, err
    assert not osp.exists(out)


def test_make_shapes_never_overwrites_silently(tmp_path, capsys):
    out = str(tmp_path / 'd')
    small = ('--num-train', '2', '--num-val', '1', '--img-size', '64')
    assert _run_script(MAKE_SHAPES, '--out', out, *small) == 0
    ann = osp.join(out, 'annotations', 'instances_train.json')
    img = osp.join(out, 'train', '000000.jpg')
    before = (open(ann).read(), open(img, 'rb').read(), osp.getmtime(ann))

    # the same arguments: the dataset is reused, nothing is rewritten
    assert _run_script(MAKE_SHAPES, '--out', out, *small) == 0
    assert osp.getmtime(ann) == before[2]

    # other arguments: refused with a message, nothing touched
    other = ('--num-train', '3', '--num-val', '1', '--img-size', '64',
             '--seed', '1')
    code = _run_script(MAKE_SHAPES, '--out', out, *other)
    assert code != 0 and 'refusing to overwrite' in str(code), code
    assert '--force' in str(code)
    assert (open(ann).read(), open(img, 'rb').read()) == before[:2]

    # a dataset this tool did not make (no parameter stamp) is refused too
    os.remove(osp.join(out, '.shapes_params.json'))
    code = _run_script(MAKE_SHAPES, '--out', out, *small)
    assert code != 0 and 'not made by this tool' in str(code), code
    assert (open(ann).read(), open(img, 'rb').read()) == before[:2]

    # --force rewrites
    assert _run_script(MAKE_SHAPES, '--out', out, *other, '--force') == 0
    with open(ann) as f:
        assert len(json.load(f)['images']) == 3
