import os.path as osp

import pytest
from mmdet.utils import register_all_modules

import efficient_detr_mm  # noqa: F401  (registers every module)

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))

register_all_modules(init_default_scope=True)


@pytest.fixture(scope='session')
def shapes_root(tmp_path_factory):
    """A tiny synthetic-shapes dataset shared by the whole session."""
    from efficient_detr_mm.datasets import make_shapes_dataset
    root = str(tmp_path_factory.mktemp('shapes'))
    make_shapes_dataset(root, num_train=8, num_val=4, img_size=(96, 128),
                        seed=0)
    return root
