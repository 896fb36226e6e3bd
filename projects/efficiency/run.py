"""Leaderboard of every real-COCO model config: parameters, FLOPs (total and
encoder) and the latency ratio to its baseline family, next to the papers'
reported AP / GFLOPs.

One command, resumable (every measurement is cached in
``measurements.json`` under the model config's hash and the input shape;
a re-run measures only what is missing or whose model config changed)::

    OMP_NUM_THREADS=1 python projects/efficiency/run.py

writes ``projects/efficiency/results.md`` and ``ap_vs_gflops.png``.

* FLOPs / params: ``tools/analysis_tools/get_flops.py CONFIG --shape 800 1333``
  in a subprocess per model (1 multiply-add = 1 FLOP, see
  efficient_detr_mm/analysis/README.md). Configs whose ``model`` is
  identical (e.g. the same architecture trained for 12 / 24 / 36 epochs)
  are measured once.
* Latency: ``tools/analysis_tools/benchmark.py --backend pytorch
  onnxruntime --breakdown`` once per baseline family (the baseline first,
  then its efficient variants, each in PyTorch and exported to ONNX
  Runtime, all interleaved, the same synthetic image), at 512 x 683 on the
  CPU by default; the ratio is median latency / the baseline's median
  latency of the same backend in the same run.  PyTorch runs also give the
  stage breakdown.
"""
import argparse
import glob
import hashlib
import json
import os
import os.path as osp
import re
import subprocess
import sys
import tempfile
import time
from collections import OrderedDict
from typing import Dict, List, Optional

import yaml

HERE = osp.dirname(osp.abspath(__file__))
REPO = osp.dirname(osp.dirname(HERE))

DINO = 'configs/dino/dino-4scale_r50_8xb2-12e_coco.py'
DEFORMABLE = ('configs/deformable_detr/'
              'deformable-detr-refine-twostage_r50_16xb2-50e_coco.py')
DETR = 'configs/detr/detr_r50_8xb2-150e_coco.py'
DETR_DC5 = 'configs/detr/detr_r50-dc5_8xb2-500e_coco.py'

#: (config folder, basename prefix, family label, baseline config); the
#: first matching row wins.
FAMILIES = (
    ('detr', 'detr_r50-dc5', 'DETR-DC5', DETR_DC5),
    ('detr', '', 'DETR', DETR),
    ('deformable_detr', '', 'Deformable DETR', DEFORMABLE),
    ('dino', '', 'DINO', DINO),
    ('focus_detr', '', 'Focus-DETR', DINO),
    ('lite_detr', 'lite-dino', 'Lite-DINO', DINO),
    ('lite_detr', 'lite-deformable', 'Lite-Deformable-DETR', DEFORMABLE),
    ('smca', '', 'SMCA', DETR),
    ('act', '', 'ACT', DETR_DC5),
)
BACKENDS = ('pytorch', 'onnxruntime')
FAMILY_ORDER = ['DETR', 'DETR-DC5', 'Deformable DETR', 'DINO', 'Focus-DETR',
                'Lite-DINO', 'Lite-Deformable-DETR', 'SMCA', 'ACT']


def log(msg: str) -> None:
    print(msg, flush=True)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument(
        '--configs',
        nargs='+',
        help='configs to compare (default: every configs/*/*.py that is not '
        'a *_shapes.py config)')
    p.add_argument(
        '--flops-shape',
        type=int,
        nargs=2,
        default=[800, 1333],
        metavar=('H', 'W'))
    p.add_argument(
        '--latency-shape',
        type=int,
        nargs=2,
        default=[512, 683],
        metavar=('H', 'W'),
        help='input of the latency benchmark')
    p.add_argument(
        '--backends',
        nargs='+',
        default=list(BACKENDS),
        choices=BACKENDS,
        help='latency backends (onnxruntime: CPU only)')
    p.add_argument('--device', default='cpu', help='latency device')
    p.add_argument('--warmup', type=int, default=1)
    p.add_argument('--repeats', type=int, default=5)
    p.add_argument('--skip-latency', action='store_true')
    p.add_argument(
        '--cache',
        default=osp.join(HERE, 'measurements.json'),
        help='measurements cache (resume)')
    p.add_argument('--out-dir', default=HERE, help='results.md / png here')
    p.add_argument('--reported', default=osp.join(HERE, 'reported.yml'))
    p.add_argument(
        '--report-only',
        action='store_true',
        help='measure nothing, write the outputs from the cache')
    return p.parse_args(argv)


# ----------------------------------------------------------------- configs
def rel(path: str) -> str:
    return osp.relpath(osp.abspath(path), REPO)


def default_configs() -> List[str]:
    return sorted(
        rel(p) for p in glob.glob(osp.join(REPO, 'configs', '*', '*.py'))
        if '/_base_/' not in p and not p.endswith('_shapes.py'))


def name_of(config: str) -> str:
    return osp.splitext(osp.basename(config))[0]


def family_of(config: str) -> Dict[str, Optional[str]]:
    """Family label and baseline config of a config path."""
    folder = osp.basename(osp.dirname(config))
    base = osp.basename(config)
    for f_dir, prefix, label, baseline in FAMILIES:
        if folder == f_dir and base.startswith(prefix):
            return dict(family=label, baseline=baseline)
    return dict(family=folder, baseline=None)


def model_hash(config: str) -> str:
    """Hash of the config's ``model`` dict (identical models share their
    measurements)."""
    from mmengine.config import Config
    cfg = Config.fromfile(osp.join(REPO, config))
    text = json.dumps(cfg.to_dict()['model'], sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


# ------------------------------------------------------------------- cache
def load_cache(path: str) -> dict:
    if osp.exists(path):
        with open(path) as f:
            return json.load(f)
    return dict(flops={}, latency={})


def save_cache(cache: dict, path: str) -> None:
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    tmp = path + '.tmp'
    with open(tmp, 'w') as f:
        json.dump(cache, f, indent=1, sort_keys=True)
    os.replace(tmp, path)


def tool_env() -> dict:
    env = dict(os.environ)
    env.setdefault('OMP_NUM_THREADS', '1')
    env['PYTHONPATH'] = REPO + os.pathsep + env.get('PYTHONPATH', '')
    return env


def run_tool(args: List[str]) -> None:
    proc = subprocess.run([sys.executable] + args,
                          cwd=REPO,
                          env=tool_env(),
                          stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT,
                          text=True)
    if proc.returncode:
        raise RuntimeError(f'{" ".join(args)} failed:\n{proc.stdout[-3000:]}')


def measure_flops(config: str, shape: List[int]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = osp.join(tmp, 'flops.json')
        run_tool([
            'tools/analysis_tools/get_flops.py', config, '--shape',
            str(shape[0]),
            str(shape[1]), '--out', out
        ])
        with open(out) as f:
            res = json.load(f)
    return dict(
        flops=res['flops'],
        params=res['params'],
        img_shape=res['img_shape'],
        batch_input_shape=res['batch_input_shape'],
        override_calls=res.get('override_calls', {}))


def measure_latency(configs: List[str], args) -> List[dict]:
    """One interleaved benchmark of ``configs`` on every backend; per
    config ``{backend: dict(median_ms, q1_ms, q3_ms, ratio[, stages_ms])}``
    plus ``device`` (and ``onnx_check``, ONNX Runtime vs PyTorch)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = osp.join(tmp, 'bench.json')
        run_tool([
            'tools/analysis_tools/benchmark.py', *configs, '--shape',
            str(args.latency_shape[0]),
            str(args.latency_shape[1]), '--batch-size', '1', '--device',
            args.device, '--warmup',
            str(args.warmup), '--repeats',
            str(args.repeats), '--breakdown', '--backend', *args.backends,
            '--out', out
        ])
        with open(out) as f:
            res = json.load(f)
    per_config = [dict(device=res['device']) for _ in configs]
    runs = iter(res['results'])
    for entry in per_config:  # the tool's order: config by config
        for backend in args.backends:
            r = next(runs)
            assert r.get('backend', 'pytorch') == backend, r
            entry[backend] = dict(
                median_ms=r['latency_ms']['median'],
                q1_ms=r['latency_ms']['q1'],
                q3_ms=r['latency_ms']['q3'],
                ratio=r['ratio'])
            if r.get('stages_ms'):
                entry[backend]['stages_ms'] = {
                    k: v['median']
                    for k, v in r['stages_ms'].items()
                }
            if r.get('onnx_check'):
                c = r['onnx_check']
                entry['onnx_check'] = dict(
                    max_score_diff=c['max_score_diff'],
                    max_box_diff=c['max_box_diff'],
                    top_labels_agree=c['top_labels_agree'])
    return per_config


# -------------------------------------------------------------- measuring
def plan(configs: List[str]) -> 'OrderedDict[str, dict]':
    """Per config (baselines first, then family by family): family,
    baseline, model hash. A baseline that is not among ``configs`` is
    replaced by the first given config of the baseline's folder, else of
    the family."""
    order = {f: i for i, f in enumerate(FAMILY_ORDER)}
    infos = {c: family_of(c) for c in configs}
    configs = sorted(
        configs, key=lambda c: (order.get(infos[c]['family'], 99), c))
    models = OrderedDict()
    for c in configs:
        info = dict(infos[c])
        base = info['baseline']
        if base not in infos:
            same_dir = [k for k in configs if base and
                        osp.dirname(k) == osp.dirname(base)]
            same_family = [k for k in configs
                           if infos[k]['family'] == info['family']]
            info['baseline'] = (same_dir or same_family)[0]
        info['hash'] = model_hash(c)
        models[c] = info
    return models


def run_flops(models, cache, args) -> None:
    shape_key = 'x'.join(map(str, args.flops_shape))
    todo = OrderedDict()  # hash -> first config with it
    for c, info in models.items():
        todo.setdefault(info['hash'], c)
    n = len(todo)
    for i, (h, c) in enumerate(todo.items(), 1):
        key = f'{h}@{shape_key}'
        if key in cache['flops']:
            log(f'[flops {i}/{n}] {name_of(c)}: cached')
            continue
        log(f'[flops {i}/{n}] {name_of(c)} at {shape_key} ...')
        t0 = time.time()
        cache['flops'][key] = dict(measure_flops(c, args.flops_shape),
                                   config=c)
        save_cache(cache, args.cache)
        tot = cache['flops'][key]['flops']['total'] / 1e9
        log(f'[flops {i}/{n}] {name_of(c)}: {tot:.1f} GFLOPs '
            f'({time.time() - t0:.0f} s)')


def latency_groups(models) -> 'OrderedDict[str, List[str]]':
    """baseline -> [baseline, unique-model members...]."""
    groups = OrderedDict()
    for c, info in models.items():
        g = groups.setdefault(info['baseline'], [info['baseline']])
        hashes = [models[m]['hash'] for m in g]
        if info['hash'] not in hashes:
            g.append(c)
    return groups


def latency_key(group: List[str], models, args) -> str:
    shape = 'x'.join(map(str, args.latency_shape))
    return (f'{"+".join(models[c]["hash"] for c in group)}@{shape}'
            f'/{args.device}/w{args.warmup}r{args.repeats}'
            f'/{"+".join(args.backends)}')


def run_latency(models, cache, args) -> None:
    groups = latency_groups(models)
    n = len(groups)
    for i, (base, group) in enumerate(groups.items(), 1):
        key = latency_key(group, models, args)
        if key in cache['latency']:
            log(f'[latency {i}/{n}] {name_of(base)} family: cached')
            continue
        log(f'[latency {i}/{n}] {name_of(base)} family, {len(group)} '
            f'models at {args.latency_shape} on {args.device} ...')
        t0 = time.time()
        res = measure_latency(group, args)
        cache['latency'][key] = dict(
            configs=group,
            results={models[c]['hash']: r
                     for c, r in zip(group, res)})
        save_cache(cache, args.cache)
        log(f'[latency {i}/{n}] done ({time.time() - t0:.0f} s): ' +
            ', '.join(f'{name_of(c)} ' + '/'.join(
                f'x{r[b]["ratio"]:.2f}' for b in args.backends)
                      for c, r in zip(group, res)))


# ---------------------------------------------------------------- results
def collect(models, cache, reported, args) -> List[dict]:
    shape_key = 'x'.join(map(str, args.flops_shape))
    groups = latency_groups(models)
    rows = []
    for c, info in models.items():
        name = name_of(c)
        m = cache['flops'].get(f'{info["hash"]}@{shape_key}')
        lat = None
        ckey = latency_key(groups[info['baseline']], models, args)
        if ckey in cache['latency']:
            lat = cache['latency'][ckey]['results'].get(info['hash'])
        base = models[info['baseline']]
        mb = cache['flops'].get(f'{base["hash"]}@{shape_key}')
        rep = reported.get(name, {})
        rep_base = reported.get(name_of(info['baseline']), {})
        row = dict(
            config=c,
            name=name,
            family=info['family'],
            baseline=info['baseline'],
            ap=rep.get('ap'),
            rep_gflops=rep.get('gflops'),
            rep_base_gflops=rep.get('baseline_gflops',
                                    rep_base.get('gflops')),
            rep=rep,
            gflops=m['flops']['total'] / 1e9 if m else None,
            enc_gflops=m['flops']['encoder'] / 1e9 if m else None,
            params_m=m['params']['total'] / 1e6 if m else None,
            base_gflops=mb['flops']['total'] / 1e9 if mb else None,
            latency_device=lat['device'] if lat else None,
            onnx_check=lat.get('onnx_check') if lat else None)
        for b in BACKENDS:
            one = lat.get(b) if lat else None
            row[f'{b}_ms'] = one['median_ms'] if one else None
            row[f'{b}_ratio'] = one['ratio'] if one else None
            row[f'{b}_stages'] = one.get('stages_ms') if one else None
        rows.append(row)
    order = {f: i for i, f in enumerate(FAMILY_ORDER)}
    rows.sort(key=lambda r: (order.get(r['family'], 99), r['name']))
    return rows


def fmt(v, spec='.1f', none='-'):
    return none if v is None else format(v, spec)


def ratio(a, b):
    return None if a is None or not b else a / b


def short_name(name: str) -> str:
    return re.sub(r'_\d+xb\d+-(\d+e)_coco$', r'_\1', name)


def deviation(r) -> Optional[float]:
    if r['gflops'] is None or not r['rep_gflops']:
        return None
    return r['gflops'] / r['rep_gflops'] - 1


def results_md(rows: List[dict], args) -> str:
    fs = 'x'.join(map(str, args.flops_shape))
    ls = 'x'.join(map(str, args.latency_shape))
    devices = sorted({r['latency_device'] for r in rows
                      if r['latency_device']}) or [args.device]
    lines = [
        '# Efficiency leaderboard', '',
        'Generated by `projects/efficiency/run.py` (see README.md); do not '
        'edit by hand.', '',
        '**Reported** columns are cited from the papers / model zoos (no '
        'COCO training or evaluation was run here; sources in '
        '`reported.yml`, paper GFLOPs are at the paper\'s own input size, '
        'mostly the COCO-val average of about 800 x 1066). **Measured** '
        'columns are ours: FLOPs = multiply-adds at one '
        f'{fs.replace("x", " x ")} input '
        '(`tools/analysis_tools/get_flops.py`, random weights, noise image); '
        f'latency = median of {args.repeats} interleaved runs after '
        f'{args.warmup} warm-up, batch 1, fp32, at a '
        f'{ls.replace("x", " x ")} input on {", ".join(devices)}, in '
        'PyTorch and in ONNX Runtime (the model exported by '
        '`tools/deployment/pytorch2onnx.py`, same threads), the baseline '
        'and its variants on both backends interleaved in one run; the '
        'ratios are to the baseline of the same backend in the same run. '
        f'{MACHINE_NOTE}', '',
        '| Family | Config | Baseline | AP (reported) | GFLOPs (reported) '
        f'| GFLOPs (measured, {fs}) | encoder GFLOPs (measured) '
        '| measured / reported | params (M, measured) '
        '| GFLOPs / baseline (reported) | GFLOPs / baseline (measured) '
        f'| PyTorch ms ({ls}) | ONNX Runtime ms ({ls}) '
        '| latency / baseline (PyTorch) | latency / baseline (ONNX Runtime) '
        '| ONNX Runtime / PyTorch |',
        '|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|'
        '---:|---:|---:|'
    ]
    for r in rows:
        dev = deviation(r)
        base = ('(itself)' if r['baseline'] == r['config'] else
                short_name(name_of(r['baseline'])))
        lines.append(
            f'| {r["family"]} | [{r["name"]}](../../{r["config"]}) '
            f'| {base} '
            f'| {fmt(r["ap"])} | {fmt(r["rep_gflops"], "g")} '
            f'| {fmt(r["gflops"])} | {fmt(r["enc_gflops"])} '
            f'| {"-" if dev is None else format(dev, "+.0%")} '
            f'| {fmt(r["params_m"], ".2f")} '
            f'| {fmt(ratio(r["rep_gflops"], r["rep_base_gflops"]), ".2f")} '
            f'| {fmt(ratio(r["gflops"], r["base_gflops"]), ".2f")} '
            f'| {fmt(r["pytorch_ms"], ".0f")} '
            f'| {fmt(r["onnxruntime_ms"], ".0f")} '
            f'| {fmt(r["pytorch_ratio"], ".2f")} '
            f'| {fmt(r["onnxruntime_ratio"], ".2f")} '
            f'| {fmt(ratio(r["onnxruntime_ms"], r["pytorch_ms"]), ".2f")} |')
    lines += stage_table(rows, ls)
    big = [r for r in rows
           if deviation(r) is not None and abs(deviation(r)) > 0.1]
    if big:
        lines += [
            '', '## Measured vs reported GFLOPs: differences over 10 %', '',
            '| Config | reported | measured | difference | why |',
            '|---|---:|---:|---:|---|'
        ]
        for r in big:
            lines.append(
                f'| {r["name"]} | {fmt(r["rep_gflops"], "g")} '
                f'| {fmt(r["gflops"])} | {deviation(r):+.0%} '
                f'| {r["rep"].get("note", "").strip()} |')
    unverified = [r['name'] for r in rows
                  if 'unverified' in str(r['rep'].get('gflops_source', ''))]
    if unverified:
        lines += [
            '', 'Reported GFLOPs recalled from the papers and not yet checked '
            'against the PDF (marked unverified in `reported.yml`): ' +
            ', '.join(unverified) + '.'
        ]
    lines += [
        '', '![reported AP vs measured GFLOPs](ap_vs_gflops.png)', ''
    ]
    return '\n'.join(lines)


#: how the latencies were taken (this repository's runs)
MACHINE_NOTE = (
    'Measured on a 2-core CPU machine shared with other jobs, with 1 '
    'thread per backend: absolute milliseconds are noisy and only the '
    'ratios within one run are meant to be compared.')

STAGES = ('backbone+neck', 'encoder', 'query selection', 'decoder',
          'head+post', 'other')


def stage_table(rows: List[dict], ls: str) -> List[str]:
    """PyTorch stage breakdown and the ONNX Runtime check, per model."""
    rows = [r for r in rows if r['pytorch_stages'] or r['onnx_check']]
    if not rows:
        return []
    lines = [
        '', f'## Latency details ({ls.replace("x", " x ")})', '',
        'PyTorch stage breakdown (median ms over the timed runs, see '
        '`efficient_detr_mm/analysis/benchmark.py`) and the exported '
        'model\'s agreement with PyTorch on the benchmark image (largest '
        'score / box difference over the 100 detections). With random '
        'weights, rank-based selections (two-stage queries, Focus-DETR '
        'tokens) can turn last-digit differences into different boxes, as '
        'a 1e-3 input perturbation does in PyTorch alone; see '
        '[docs/deployment.md](../../docs/deployment.md).',
        '', '| Config | ' + ' | '.join(STAGES) +
        ' | ONNX Runtime vs PyTorch: max score / box (px) diff, top-10 |',
        '|---|' + '---:|' * len(STAGES) + '---|'
    ]
    for r in rows:
        st = r['pytorch_stages'] or {}
        chk = r['onnx_check']
        check = '-' if not chk else (
            f'{chk["max_score_diff"]:.1g} / {chk["max_box_diff"]:.1g}, '
            f'{"agree" if chk["top_labels_agree"] else "differ"}')
        lines.append(f'| {r["name"]} | ' +
                     ' | '.join(fmt(st.get(k), '.0f') for k in STAGES) +
                     f' | {check} |')
    return lines


FAMILY_PAGES = OrderedDict([
    ('DETR / DETR-DC5', 'configs/detr/README.md'),
    ('Deformable DETR', 'configs/deformable_detr/README.md'),
    ('DINO', 'configs/dino/README.md'),
    ('Focus-DETR', 'configs/focus_detr/README.md'),
    ('Lite DETR (Lite-DINO, Lite-Deformable-DETR)',
     'configs/lite_detr/README.md'),
    ('SMCA', 'configs/smca/README.md'),
    ('ACT (+ MTKD)', 'configs/act/README.md'),
])


def zoo_section(rows: List[dict], args) -> str:
    """The main README's model-zoo section (links relative to the repo
    root): a compact leaderboard, how to reproduce it, the family pages."""
    fs = ' x '.join(map(str, args.flops_shape))
    ls = ' x '.join(map(str, args.latency_shape))
    lines = [
        '## Model zoo', '',
        'Every model config is listed in [model-index.yml](model-index.yml) '
        '(mmdet format; one `metafile.yml` per family). Box AP and paper '
        'GFLOPs are **reported** by the papers / model zoos (no COCO '
        'training was run here); GFLOPs and latency ratios are **measured** '
        f'here: multiply-adds at {fs} (random weights, noise image), CPU '
        f'latency at {ls}, batch 1, 1 thread, in PyTorch and in ONNX Runtime '
        '(see [docs/deployment.md](docs/deployment.md)), as a ratio to the '
        'family\'s baseline on the same backend in the same run, and '
        f'ONNX Runtime / PyTorch. {MACHINE_NOTE}', '',
        'One meaning of `FLOPs`: the `FLOPs` of a metafile entry (there '
        'when its model is measured) is the measured number, in GFLOPs '
        '(10^9 multiply-adds) of the whole model '
        f'at one {fs} input (`tools/analysis_tools/get_flops.py`, deformable '
        'attention counted; `projects/efficiency/measurements.json`, checked '
        'by `tests/test_model_index.py`). The papers\' GFLOPs, counted at '
        'their own input sizes (mostly about 800 x 1066), are "reported" '
        '(`projects/efficiency/reported.yml`), never `FLOPs`.', '',
        '| Model | AP (reported) | GFLOPs (reported) '
        f'| GFLOPs (measured, {fs}) | GFLOPs / baseline (measured) '
        f'| latency / baseline (CPU PyTorch, {ls}) '
        f'| latency / baseline (CPU ONNX Runtime, {ls}) '
        '| ONNX Runtime / PyTorch |',
        '|---|---:|---:|---:|---:|---:|---:|---:|'
    ]
    for r in rows:
        lines.append(
            f'| [{short_name(r["name"])}]({r["config"]}) | {fmt(r["ap"])} '
            f'| {fmt(r["rep_gflops"], "g")} | {fmt(r["gflops"])} '
            f'| {fmt(ratio(r["gflops"], r["base_gflops"]), ".2f")} '
            f'| {fmt(r["pytorch_ratio"], ".2f")} '
            f'| {fmt(r["onnxruntime_ratio"], ".2f")} '
            f'| {fmt(ratio(r["onnxruntime_ms"], r["pytorch_ms"]), ".2f")} |')
    lines += [
        '', 'Full table (encoder GFLOPs, parameters, reported ratios, '
        'latencies, reasons for differences over 10 % to the papers) in '
        '[projects/efficiency/results.md](projects/efficiency/results.md); '
        'plot of reported AP against measured GFLOPs: '
        '[ap_vs_gflops.png](projects/efficiency/ap_vs_gflops.png).', '',
        'Reproduce (resumable, skips what is already measured; a few '
        'minutes per model on one free CPU core, export to ONNX included):',
        '', '```shell',
        'OMP_NUM_THREADS=1 python projects/efficiency/run.py', '```', '',
        'See [projects/efficiency/README.md](projects/efficiency/README.md) '
        'for options (other shapes, a GPU, a subset of configs).', '',
        'Family pages (method, options, reported and measured results):', ''
    ]
    lines += [f'- [{k}]({v})' for k, v in FAMILY_PAGES.items()]
    return '\n'.join(lines) + '\n'


def plot(rows: List[dict], path: str, args) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(11, 7), dpi=120)
    cmap = plt.get_cmap('tab10')
    families = [f for f in FAMILY_ORDER + sorted({r['family'] for r in rows})
                if any(r['family'] == f for r in rows)]
    families = list(OrderedDict.fromkeys(families))
    for i, fam in enumerate(families):
        pts = [r for r in rows if r['family'] == fam and
               r['ap'] is not None and r['gflops'] is not None]
        if not pts:
            continue
        ax.scatter([r['gflops'] for r in pts], [r['ap'] for r in pts],
                   s=140 if pts[0]['baseline'] == pts[0]['config'] else 60,
                   color=cmap(i % 10), label=fam,
                   marker='*' if all(r['baseline'] == r['config']
                                     for r in pts) else 'o',
                   edgecolors='black', linewidths=0.5, zorder=3)
        for k, r in enumerate(pts):
            ax.annotate(short_name(r['name']), (r['gflops'], r['ap']),
                        textcoords='offset points',
                        xytext=(5, 3 if k % 2 == 0 else -9),
                        fontsize=6, color=cmap(i % 10))
    fs = ' x '.join(map(str, args.flops_shape))
    ax.set_xlabel(f'GFLOPs, measured here ({fs}, multiply-adds)')
    ax.set_ylabel('COCO val box AP, reported by the papers / model zoos')
    ax.set_title('Reported AP vs measured GFLOPs (stars: baselines)')
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc='lower right')
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


DEPLOY_DOC = osp.join(REPO, 'docs', 'deployment.md')
CPU_TABLE = ('<!-- cpu-table: generated by projects/efficiency/run.py -->',
             '<!-- end of cpu-table -->')


def cpu_table(rows: List[dict]) -> str:
    """The PyTorch vs ONNX Runtime latency table of docs/deployment.md."""
    lines = [
        '| Family | Model | PyTorch ms | ONNX Runtime ms | latency / '
        'baseline (PyTorch) | latency / baseline (ONNX Runtime) | ONNX '
        'Runtime / PyTorch |', '|---|---|---:|---:|---:|---:|---:|'
    ]
    for r in rows:
        pt, ort = r['pytorch_ms'], r['onnxruntime_ms']
        lines.append(
            f'| {r["family"]} | [{r["name"]}](../{r["config"]}) | '
            f'{fmt(pt, ".0f")} | {fmt(ort, ".0f")} | '
            f'{fmt(r["pytorch_ratio"], ".2f")} | '
            f'{fmt(r["onnxruntime_ratio"], ".2f")} | '
            f'{fmt(ratio(ort, pt), ".2f")} |')
    return '\n'.join(lines) + '\n'


def write_cpu_table(rows: List[dict], path: str = DEPLOY_DOC) -> bool:
    """Replace the table between the ``CPU_TABLE`` markers of ``path``;
    returns whether the file has the markers."""
    if not osp.isfile(path):
        return False
    with open(path) as f:
        text = f.read()
    start, end = CPU_TABLE
    if start not in text or end not in text:
        return False
    head, rest = text.split(start, 1)
    tail = rest.split(end, 1)[1]
    with open(path, 'w') as f:
        f.write(f'{head}{start}\n{cpu_table(rows)}{end}{tail}')
    return True


def set_metafile_flops(text: str, flops: Dict[str, float]) -> str:
    """``text`` of a metafile.yml with each entry's ``Metadata.FLOPs`` set
    to ``flops[entry's Config]`` (inserted as the last ``Metadata`` line
    when absent; entries not in ``flops`` are left as they are).  Edits the
    text line by line, so comments and layout stay."""
    lines = text.splitlines(keepends=True)
    out, config, in_meta, meta_indent = [], None, False, ''

    def close_meta():
        # leaving a Metadata block without a FLOPs line: insert one
        if in_meta and config in flops and not any(
                ln.strip().startswith('FLOPs:') for ln in block):
            out.append(f'{meta_indent}FLOPs: {flops[config]}\n')

    block: List[str] = []
    for line in lines:
        stripped = line.strip()
        indent = line[:len(line) - len(line.lstrip())]
        if in_meta and stripped and len(indent) <= len(meta_indent) - 2:
            close_meta()
            in_meta = False
        if stripped.startswith('- Name:'):
            config = None
        elif stripped.startswith('Config:'):
            config = stripped.split(':', 1)[1].strip()
        elif stripped == 'Metadata:' and config is not None:
            in_meta, meta_indent, block = True, indent + '  ', []
            out.append(line)
            continue
        if in_meta:
            block.append(line)
            if stripped.startswith('FLOPs:') and config in flops:
                line = f'{indent}FLOPs: {flops[config]}\n'
        out.append(line)
    close_meta()
    return ''.join(out)


def write_metafile_flops(models, cache, args) -> List[str]:
    """Set ``Metadata.FLOPs`` of every measured COCO entry of
    ``configs/*/metafile.yml`` to the measured GFLOPs at the FLOPs shape,
    rounded to 0.1 (the one meaning of ``FLOPs``, checked by
    tests/test_model_index.py); returns the metafiles changed."""
    shape_key = 'x'.join(map(str, args.flops_shape))
    flops = {}
    for c, info in models.items():
        m = cache['flops'].get(f'{info["hash"]}@{shape_key}')
        if m:
            flops[c] = round(m['flops']['total'] / 1e9, 1)
    changed = []
    for mf in sorted(glob.glob(osp.join(REPO, 'configs', '*',
                                        'metafile.yml'))):
        with open(mf) as f:
            text = f.read()
        new = set_metafile_flops(text, flops)
        if new != text:
            with open(mf, 'w') as f:
                f.write(new)
            changed.append(rel(mf))
    return changed


def main(argv=None):
    args = parse_args(argv)
    configs = [rel(c) for c in (args.configs or default_configs())]
    with open(args.reported) as f:
        reported = yaml.safe_load(f) or {}
    cache = load_cache(args.cache)
    log(f'{len(configs)} configs; cache {args.cache}')
    models = plan(configs)
    if not args.report_only:
        run_flops(models, cache, args)
        if not args.skip_latency:
            run_latency(models, cache, args)
    rows = collect(models, cache, reported, args)
    os.makedirs(args.out_dir, exist_ok=True)
    md = osp.join(args.out_dir, 'results.md')
    with open(md, 'w') as f:
        f.write(results_md(rows, args))
    with open(osp.join(args.out_dir, 'README_zoo_section.md'), 'w') as f:
        f.write(zoo_section(rows, args))
    png = osp.join(args.out_dir, 'ap_vs_gflops.png')
    plot(rows, png, args)
    log(f'wrote {md} and {png}')
    # the repository's own pages follow a full run at the default shapes
    # (not a subset, nor a run into another folder)
    if args.configs is None and args.out_dir == HERE:
        if write_cpu_table(rows):
            log(f'wrote the CPU latency table of {rel(DEPLOY_DOC)}')
        if tuple(args.flops_shape) == (800, 1333):
            for mf in write_metafile_flops(models, cache, args):
                log(f'updated FLOPs in {mf}')


if __name__ == '__main__':
    main()
