"""The bookkeeping every official-checkpoint converter relies on."""
import argparse
import os
import pickle

import pytest
import torch

from efficient_detr_mm.converters import (COCO_IDS, ConversionError,
                                          StateDictConverter,
                                          check_against_model, coco_class_rows,
                                          save_converted)
from efficient_detr_mm.runtime import safe_load


def _conv():
    src = {'a.w': torch.zeros(2, 3), 'a.b': torch.zeros(2),
           'alias.w': torch.zeros(2, 3)}
    return StateDictConverter(src)


def test_coco_rows_pick_the_80_ids_then_extra():
    rows = coco_class_rows(extra=[91])
    assert rows.tolist()[:3] == [1, 2, 3] and rows.tolist()[-2:] == [90, 91]
    assert len(rows) == 81 and len(set(COCO_IDS)) == 80
    # ids 12, 26, 29, 30, 45, 66, 68, 69, 71, 83 are not COCO classes
    assert not {12, 26, 29, 30, 45, 66, 68, 69, 71, 83} & set(COCO_IDS)


def test_every_key_accounted_for():
    conv = _conv()
    conv.move_prefix('a.', 'm.')
    assert conv.drop(r'alias\.', 'stored twice') == 1
    model = {'m.w': torch.ones(2, 3), 'm.b': torch.ones(2)}
    check_against_model(conv, model)  # nothing left, nothing missing
    with pytest.raises(ConversionError, match='consumed twice'):
        conv.take('a.w')


def test_leftover_missing_unexpected_and_misshaped_keys_are_named():
    conv = _conv()
    conv.move('a.w', 'm.w', lambda t: t[:1])
    conv.move('a.b', 'm.extra')
    model = {'m.w': torch.ones(2, 3), 'm.b': torch.ones(2)}
    with pytest.raises(ConversionError) as err:
        check_against_model(conv, model)
    msg = str(err.value)
    assert 'alias.w' in msg  # not converted
    assert 'm.b' in msg  # not filled
    assert 'm.extra' in msg  # model does not have it
    assert 'm.w: converted (1, 3) vs model (2, 3)' in msg
    with pytest.raises(ConversionError, match='written twice'):
        conv.put('m.w', torch.zeros(1))


def test_save_converted_writes_meta_and_no_temp_file(tmp_path):
    dst = tmp_path / 'out' / 'model.pth'
    save_converted({'x': torch.arange(3.)}, str(dst),
                   dict(classes=('a', 'b')), source='src.pth')
    ckpt = torch.load(dst, weights_only=True)
    assert ckpt['meta']['dataset_meta']['classes'] == ('a', 'b')
    assert ckpt['meta']['source'] == 'src.pth'
    assert torch.equal(ckpt['state_dict']['x'], torch.arange(3.))
    assert os.listdir(dst.parent) == ['model.pth']


class _Payload:

    def __reduce__(self):
        return os.system, ('touch should_not_exist',)


def test_safe_load_reads_official_args_but_runs_no_pickle(tmp_path):
    ok = tmp_path / 'official.pth'
    torch.save(dict(model={'w': torch.ones(1)},
                    args=argparse.Namespace(lr=1e-4, dataset='coco')), ok)
    ckpt = safe_load(str(ok))
    assert ckpt['args'].lr == 1e-4
    evil = tmp_path / 'evil.pth'
    torch.save(dict(model={'w': torch.ones(1)}, x=_Payload()), evil)
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        with pytest.raises(pickle.UnpicklingError, match='evil.pth'):
            safe_load(str(evil))
    finally:
        os.chdir(cwd)
    assert not (tmp_path / 'should_not_exist').exists()
