"""projects/efficiency/run.py end to end on two tiny configs at a small
shape: measures, writes results.md and a readable PNG, and resumes from its
cache without measuring again."""
import importlib.util
import json
import os.path as osp
import sys

import matplotlib.image as mpimg
import pytest
from helpers import REPO, run_tool

RUN = osp.join(REPO, 'projects', 'efficiency', 'run.py')
BASE = 'configs/dino/dino-4scale_r18-tiny_1xb4-12e_shapes.py'
VARIANT = 'configs/focus_detr/focus-detr-4scale_r18-tiny_1xb4-12e_shapes.py'


def _run(tmp_path, *extra):
    return run_tool([
        sys.executable, RUN, '--configs', BASE, VARIANT, '--flops-shape',
        '128', '160', '--latency-shape', '128', '128', '--warmup', '0',
        '--repeats', '1', '--cache',
        str(tmp_path / 'm.json'), '--out-dir',
        str(tmp_path), *extra
    ]).stdout


def _row(md, name):
    rows = [line for line in md.splitlines() if f'[{name}]' in line]
    assert len(rows) == 1, md
    return [c.strip() for c in rows[0].strip('|').split('|')]


def test_leaderboard_runs_and_resumes(tmp_path):
    out = _run(tmp_path)
    assert '[flops 1/2]' in out and '[flops 2/2]' in out
    # both tiny models are compared in one latency run, the DINO one first
    assert '[latency 1/1]' in out, out
    md = (tmp_path / 'results.md').read_text()
    assert '128x160' in md and '128 x 128' in md
    base = _row(md, 'dino-4scale_r18-tiny_1xb4-12e_shapes')
    var = _row(md, 'focus-detr-4scale_r18-tiny_1xb4-12e_shapes')
    assert base[2] == '(itself)' and var[2].startswith('dino-4scale_r18')
    # columns: measured total, encoder GFLOPs, params, ratios
    assert float(base[5]) > float(base[6]) > 0
    assert float(var[5]) > 0 and float(var[8]) > 0
    assert base[10] == '1.00'
    # latency / baseline under PyTorch and ONNX Runtime, ORT / PyTorch
    assert base[13] == '1.00' and base[14] == '1.00'
    assert float(var[13]) > 0 and float(var[14]) > 0 and float(var[15]) > 0
    assert float(base[15]) == pytest.approx(
        float(base[12]) / float(base[11]), abs=0.02)
    # PyTorch stage breakdown and the ONNX Runtime check, per model
    assert 'backbone+neck' in md and 'agree' in md
    # Focus-DETR's encoder updates fewer tokens than DINO's
    cache = json.loads((tmp_path / 'm.json').read_text())
    enc = {v['config']: v['flops']['encoder'] for v in cache['flops'].values()}
    assert enc[VARIANT] < enc[BASE]
    zoo = (tmp_path / 'README_zoo_section.md').read_text()
    assert '](configs/focus_detr/README.md)' in zoo
    assert 'python projects/efficiency/run.py' in zoo
    img = mpimg.imread(str(tmp_path / 'ap_vs_gflops.png'))
    assert img.ndim == 3 and img.shape[0] > 300 and img.shape[1] > 300

    again = _run(tmp_path)
    assert again.count(': cached') == 3, again
    assert 'GFLOPs (' not in again  # nothing measured again
    assert (tmp_path / 'results.md').read_text() == md


def test_changed_model_gets_a_new_cache_key(tmp_path):
    """The cache is keyed by the model dict: editing a config's model makes
    run_flops measure it again; the same model under two names is one key."""
    spec = importlib.util.spec_from_file_location('efficiency_run', RUN)
    leaderboard = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(leaderboard)
    cfg = tmp_path / 'cfgs' / 'tiny.py'
    twin = tmp_path / 'cfgs' / 'twin.py'
    cfg.parent.mkdir()

    def write(path, queries):
        path.write_text(f"_base_ = '{osp.join(REPO, BASE)}'\n"
                        f'model = dict(num_queries={queries})\n'
                        f'train_cfg = dict(max_epochs={queries})\n')

    write(cfg, 100)
    write(twin, 100)
    models = leaderboard.plan([str(cfg), str(twin)])
    first, same = [m['hash'] for m in models.values()]
    assert first == same  # schedule differs, model identical: measured once
    write(cfg, 50)
    changed = leaderboard.plan([str(cfg)])
    assert list(changed.values())[0]['hash'] != first


def test_metafile_flops_are_set_in_place():
    """run.py writes the measured GFLOPs into the metafiles: an existing
    FLOPs line is replaced, a missing one is added at the end of Metadata,
    entries not measured and comments are left alone."""
    spec = importlib.util.spec_from_file_location('efficiency_run2', RUN)
    leaderboard = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(leaderboard)
    text = ('# FLOPs: measured\n'
            'Models:\n'
            '  - Name: a\n'
            '    Config: configs/x/a.py\n'
            '    Metadata:\n'
            '      Epochs: 12\n'
            '      FLOPs: 1.0\n'
            '    Results:\n'
            '      - Task: Object Detection\n'
            '  - Name: b\n'
            '    Config: configs/x/b.py\n'
            '    Metadata:\n'
            '      Epochs: 24\n'
            '    Results:\n'
            '      - Task: Object Detection\n'
            '  - Name: c\n'
            '    Config: configs/x/c.py\n'
            '    Metadata:\n'
            '      Epochs: 36\n'
            '      FLOPs: 7.0\n')
    new = leaderboard.set_metafile_flops(
        text, {'configs/x/a.py': 2.5, 'configs/x/b.py': 3.5})
    assert new.splitlines() == [
        '# FLOPs: measured', 'Models:', '  - Name: a',
        '    Config: configs/x/a.py', '    Metadata:', '      Epochs: 12',
        '      FLOPs: 2.5', '    Results:', '      - Task: Object Detection',
        '  - Name: b', '    Config: configs/x/b.py', '    Metadata:',
        '      Epochs: 24', '      FLOPs: 3.5', '    Results:',
        '      - Task: Object Detection', '  - Name: c',
        '    Config: configs/x/c.py', '    Metadata:', '      Epochs: 36',
        '      FLOPs: 7.0']
    assert leaderboard.set_metafile_flops(
        new, {'configs/x/a.py': 2.5, 'configs/x/b.py': 3.5}) == new


def test_cpu_table_replaced_between_markers(tmp_path):
    """docs/deployment.md's latency table is rewritten from the leaderboard
    rows between its markers; the text around it stays."""
    spec = importlib.util.spec_from_file_location('efficiency_run3', RUN)
    leaderboard = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(leaderboard)
    start, end = leaderboard.CPU_TABLE
    doc = tmp_path / 'deployment.md'
    doc.write_text(f'intro\n{start}\nold table\n{end}\n\noutro\n')
    row = dict(family='DINO', name='dino', config='configs/dino/x.py',
               pytorch_ms=200.0, onnxruntime_ms=150.0, pytorch_ratio=1.0,
               onnxruntime_ratio=1.0)
    assert leaderboard.write_cpu_table([row], str(doc))
    text = doc.read_text()
    assert text.startswith('intro\n') and text.endswith(f'{end}\n\noutro\n')
    assert 'old table' not in text
    assert '| DINO | [dino](../configs/dino/x.py) | 200 | 150 | 1.00 | ' \
        '1.00 | 0.75 |' in text
    plain = tmp_path / 'plain.md'
    plain.write_text('no markers\n')
    assert not leaderboard.write_cpu_table([row], str(plain))
    assert plain.read_text() == 'no markers\n'
