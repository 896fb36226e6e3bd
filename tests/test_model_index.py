"""model-index.yml: every config has exactly one metafile entry, every
entry's config exists and builds; the entries follow mmdet's metafile
format; `FLOPs` has one meaning (measured at 800 x 1333). Also: the
efficiency leaderboard knows every real-COCO config."""
import glob
import importlib.util
import json
import os.path as osp
from collections import Counter

import pytest
import yaml
from helpers import REPO
from mmdet.registry import MODELS
from mmengine.config import Config

INDEX = osp.join(REPO, 'model-index.yml')
EFFICIENCY = osp.join(REPO, 'projects', 'efficiency')

CONFIGS = sorted(
    osp.relpath(p, REPO)
    for p in glob.glob(osp.join(REPO, 'configs', '*', '*.py'))
    if '/_base_/' not in p)
COCO_CONFIGS = [c for c in CONFIGS if not c.endswith('_shapes.py')]


def load_yaml(path):
    with open(path) as f:
        return yaml.safe_load(f)


def metafiles():
    return load_yaml(INDEX)['Import']


def all_models():
    """(metafile, collection names, model entry) for every entry."""
    out = []
    for mf in metafiles():
        meta = load_yaml(osp.join(REPO, mf))
        names = {c['Name'] for c in meta.get('Collections', [])}
        for m in meta.get('Models', []):
            out.append((mf, names, m))
    return out


def entry_configs():
    return [m.get('Config') for _, _, m in all_models()]


def test_index_imports_every_family_metafile():
    imported = metafiles()
    assert len(imported) == len(set(imported))
    for mf in imported:
        assert osp.isfile(osp.join(REPO, mf)), mf
    families = sorted({c.split('/')[1] for c in CONFIGS})
    missing = [f for f in families
               if f'configs/{f}/metafile.yml' not in imported]
    assert not missing, f'families without a metafile in the index: {missing}'


def test_collections_have_paper_code_architecture_readme():
    for mf in metafiles():
        meta = load_yaml(osp.join(REPO, mf))
        assert meta.get('Collections'), mf
        for col in meta['Collections']:
            where = f'{mf}: {col.get("Name")}'
            assert col.get('Name'), where
            assert col['Paper']['URL'].startswith('http'), where
            assert col['Paper']['Title'], where
            assert col['Code']['URL'].startswith('http'), where
            assert col['Metadata']['Architecture'], where
            assert col['Metadata']['Training Data'], where
            assert osp.isfile(osp.join(REPO, col['README'])), where


def test_every_config_has_exactly_one_entry():
    counts = Counter(entry_configs())
    missing = [c for c in CONFIGS if counts[c] == 0]
    duplicated = [c for c in CONFIGS if counts[c] > 1]
    assert not missing and not duplicated, (
        f'configs without a metafile entry: {missing}; configs with more '
        f'than one: {duplicated}')


def test_every_entry_is_well_formed():
    problems = []
    names = Counter(m.get('Name') for _, _, m in all_models())
    for mf, collections, m in all_models():
        name, cfg = m.get('Name'), m.get('Config')
        where = f'{mf}: {name}'
        if names[name] > 1:
            problems.append(f'{where}: duplicate name')
        if m.get('In Collection') not in collections:
            problems.append(f'{where}: collection {m.get("In Collection")} '
                            f'not in {sorted(collections)}')
        if not cfg or not osp.isfile(osp.join(REPO, cfg)):
            problems.append(f'{where}: config {cfg} does not exist')
            continue
        if osp.dirname(cfg) != osp.dirname(mf):
            problems.append(f'{where}: config {cfg} outside {mf}\'s folder')
        if name != osp.splitext(osp.basename(cfg))[0]:
            problems.append(f'{where}: name differs from config {cfg}')
        if not isinstance(m.get('Metadata'), dict) or \
                'Epochs' not in m['Metadata']:
            problems.append(f'{where}: Metadata.Epochs missing')
        results = m.get('Results') or []
        if cfg.endswith('_shapes.py'):
            if any(r.get('Dataset') == 'COCO' for r in results):
                problems.append(f'{where}: tiny shapes config with a COCO '
                                'result')
            continue
        coco = [r for r in results if r.get('Dataset') == 'COCO' and
                r.get('Task') == 'Object Detection']
        if len(coco) != 1 or not isinstance(
                coco[0].get('Metrics', {}).get('box AP'), (int, float)):
            problems.append(f'{where}: needs one COCO Object Detection result '
                            'with a numeric box AP')
        if 'Weights' in m and not str(m['Weights']).startswith('http'):
            problems.append(f'{where}: Weights is not a URL')
    assert not problems, '\n'.join(problems)


@pytest.mark.parametrize('cfg', sorted(set(filter(None, entry_configs()))))
def test_entry_config_builds(cfg):
    path = osp.join(REPO, cfg)
    assert osp.isfile(path), f'{cfg} listed in a metafile does not exist'
    config = Config.fromfile(path)
    model_cfg = config.model
    model_cfg.backbone.init_cfg = None  # no download in tests
    model = MODELS.build(model_cfg)
    assert model.__class__.__name__ == config.model.type


def load_leaderboard():
    spec = importlib.util.spec_from_file_location(
        'efficiency_run', osp.join(EFFICIENCY, 'run.py'))
    leaderboard = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(leaderboard)
    return leaderboard


def test_flops_mean_measured_gflops_at_800x1333():
    """`Metadata.FLOPs` has one meaning: the GFLOPs (10^9 multiply-adds)
    that tools/analysis_tools/get_flops.py measured for the entry's model at
    800 x 1333 (projects/efficiency/measurements.json, keyed by the hash of
    the config's model dict), rounded to 0.1. An entry carries it exactly
    when its model is measured (so a changed model needs a new measurement:
    `OMP_NUM_THREADS=1 python projects/efficiency/run.py`); the tiny shapes
    entries carry none."""
    leaderboard = load_leaderboard()
    with open(osp.join(EFFICIENCY, 'measurements.json')) as f:
        measured = json.load(f)['flops']
    problems, n = [], 0
    for mf, _, m in all_models():
        cfg, value = m['Config'], (m.get('Metadata') or {}).get('FLOPs')
        where = f'{mf}: {cfg}'
        if cfg.endswith('_shapes.py'):
            if value is not None:
                problems.append(f'{where}: tiny shapes entry with FLOPs')
            continue
        key = f'{leaderboard.model_hash(cfg)}@800x1333'
        if key not in measured:
            if value is not None:
                problems.append(
                    f'{where}: FLOPs {value!r} but its model is not '
                    'measured at 800x1333 (run `OMP_NUM_THREADS=1 python '
                    'projects/efficiency/run.py`, or drop FLOPs)')
            continue
        expected = round(measured[key]['flops']['total'] / 1e9, 1)
        n += 1
        if value != expected:
            problems.append(f'{where}: FLOPs {value!r}, measured '
                            f'{expected} GFLOPs at 800x1333')
    assert not problems, '\n'.join(problems)
    assert n > 0


def test_efficiency_leaderboard_covers_every_coco_config():
    """Every real-COCO config has a family, a baseline that exists, and a
    reported AP in projects/efficiency/reported.yml."""
    leaderboard = load_leaderboard()
    assert leaderboard.default_configs() == COCO_CONFIGS
    reported = load_yaml(osp.join(EFFICIENCY, 'reported.yml'))
    problems = []
    for c in COCO_CONFIGS:
        info = leaderboard.family_of(c)
        if info['baseline'] is None or info['family'] not in \
                leaderboard.FAMILY_ORDER:
            problems.append(f'{c}: no family / baseline')
        elif info['baseline'] not in COCO_CONFIGS:
            problems.append(f'{c}: baseline {info["baseline"]} missing')
        name = osp.splitext(osp.basename(c))[0]
        if not isinstance(reported.get(name, {}).get('ap'), (int, float)):
            problems.append(f'{c}: no reported AP in reported.yml')
    assert not problems, '\n'.join(problems)
    stale = sorted(set(reported) - {
        osp.splitext(osp.basename(c))[0] for c in COCO_CONFIGS})
    assert not stale, f'reported.yml entries without a config: {stale}'
