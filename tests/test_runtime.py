"""Checkpoint loading under torch 2.13's weights_only default stays safe."""
import pickle

import pytest
import torch
from mmengine.logging import HistoryBuffer, MessageHub


class _Evil:
    """Pickles as ``getattr(HistoryBuffer, '__init__')``: must be refused."""

    def __reduce__(self):
        return getattr, (HistoryBuffer, '__init__')


class _EvilBuiltins:
    """Pickles as ``getattr(getattr, '__self__')`` (the builtins module)."""

    def __reduce__(self):
        return getattr, (getattr, '__self__')


def test_message_hub_roundtrip_with_weights_only(tmp_path):
    hub = MessageHub('t')
    hub.update_scalar('train/loss', 1.5)
    hub.update_scalar('train/loss', 0.5)
    path = tmp_path / 'hub.pth'
    torch.save(dict(message_hub=hub.state_dict()), path)
    loaded = torch.load(path)  # weights_only=True by default
    buf = loaded['message_hub']['log_scalars']['train/loss']
    assert isinstance(buf, HistoryBuffer)
    assert buf.mean() == pytest.approx(1.0)


@pytest.mark.parametrize('payload', [_Evil(), _EvilBuiltins()])
def test_other_getattr_refused(tmp_path, payload):
    path = tmp_path / 'evil.pth'
    torch.save({'x': payload}, path)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path)
