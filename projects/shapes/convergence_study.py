"""SMCA's claim on synthetic shapes: DETR vs single-scale SMCA vs
multi-scale SMCA, same tiny backbone (ResNet-18 from scratch), width,
decoder depth, query count, optimiser and number of iterations; COCO box AP
on the val split every ``--eval-interval`` iterations.

    python projects/shapes/convergence_study.py --iters 800 --out /tmp/conv

prints the AP table, writes ``ap_vs_iter.png``, ``results.json`` and
``results.md`` into ``--out`` (each model's mmengine work dir is under it).
Re-running with the same ``--out`` retrains (``--plot-only`` redraws the
table and plot from the logs, e.g. after training the models in parallel
with one ``--models NAME`` process each).  Runs on CPU by default;
``--device cuda`` where available.
"""
import argparse
import glob
import json
import os
import os.path as osp
import subprocess
import sys
import time

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))

MODELS = {
    'DETR': 'configs/detr/detr_r18-tiny_1xb4-12e_shapes.py',
    'SMCA (single-scale)': 'configs/smca/smca_r18-tiny_1xb4-12e_shapes.py',
    'SMCA (multi-scale)': 'configs/smca/smca-ms_r18-tiny_1xb4-12e_shapes.py',
}
KEYS = {
    'DETR': 'detr',
    'SMCA (single-scale)': 'smca',
    'SMCA (multi-scale)': 'smca-ms'
}
# optional ablation (not in the default set): the single-scale SMCA model
# with beta -> inf, i.e. log G = 0: DETR cross-attention + SMCA's focal
# loss and centre-relative boxes, isolating the Gaussian prior
MODELS['SMCA without Gaussian (beta=inf)'] = MODELS['SMCA (single-scale)']
KEYS['SMCA without Gaussian (beta=inf)'] = 'smca-nogauss'
OVERRIDES = {
    'smca-nogauss': {
        'model.decoder.layer_cfg.gaussian_cfg.beta': 1e30
    }
}
DEFAULT_MODELS = ['detr', 'smca', 'smca-ms']


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--iters', type=int, default=800)
    p.add_argument('--eval-interval', type=int, default=None,
                   help='default: iters // 5')
    p.add_argument('--out', default='work_dirs/smca_convergence')
    p.add_argument('--models', nargs='+', default=DEFAULT_MODELS,
                   choices=list(KEYS.values()))
    p.add_argument('--num-train', type=int, default=400)
    p.add_argument('--num-val', type=int, default=50)
    p.add_argument('--img-size', type=int, nargs=2, default=(128, 192),
                   metavar=('H', 'W'))
    p.add_argument('--batch-size', type=int, default=4)
    p.add_argument('--lr', type=float, default=2e-4)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--device', default='cpu', choices=['cpu', 'cuda'])
    p.add_argument('--plot-only', action='store_true')
    return p.parse_args()


def study_config(cfg_path: str, args, data_root: str, name: str) -> str:
    """Write the model's config turned into an iteration-based run on the
    study's data; return its path."""
    from mmengine.config import Config
    cfg = Config.fromfile(osp.join(REPO, cfg_path))
    cfg.merge_from_dict(OVERRIDES.get(name, {}))
    from efficient_detr_mm.datasets import use_shapes_root
    from projects.shapes.study_utils import iteration_schedule
    use_shapes_root(cfg, data_root, num_workers=0)
    cfg.train_dataloader.batch_size = args.batch_size
    interval = args.eval_interval or max(1, args.iters // 5)
    # constant lr: AP vs iteration, no drop
    iteration_schedule(cfg, args.iters, args.lr, interval, args.iters)
    cfg.default_hooks.visualization.draw = False
    cfg.randomness = dict(seed=args.seed)
    out = osp.join(args.out, f'{name}.py')
    cfg.dump(out)
    return out


def read_curve(work_dir: str) -> list:
    """[(iteration, bbox_mAP, bbox_mAP_50)] from the mmengine json log."""
    logs = sorted(glob.glob(osp.join(work_dir, '*', 'vis_data',
                                     'scalars.json')))
    curve = []
    if not logs:
        return curve
    with open(logs[-1]) as f:
        for line in f:
            rec = json.loads(line)
            if 'coco/bbox_mAP' in rec:
                curve.append((int(rec['step']), rec['coco/bbox_mAP'],
                              rec['coco/bbox_mAP_50']))
    return curve


def train(cfg_file: str, work_dir: str, device: str) -> float:
    env = dict(os.environ)
    env.setdefault('OMP_NUM_THREADS', '1')
    if device == 'cpu':
        env['CUDA_VISIBLE_DEVICES'] = ''
    t0 = time.time()
    log = osp.join(args_out_dir(work_dir), 'train.log')
    with open(log, 'w') as f:
        proc = subprocess.run([
            sys.executable, 'tools/train.py', cfg_file, '--work-dir',
            work_dir
        ],
                              cwd=REPO,
                              env=env,
                              stdout=f,
                              stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        raise RuntimeError(f'training failed, see {log}')
    return time.time() - t0


def args_out_dir(work_dir: str) -> str:
    os.makedirs(work_dir, exist_ok=True)
    return work_dir


def plot(results: dict, path: str, title: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, rec in results.items():
        if rec['curve']:
            its, ap, _ = zip(*rec['curve'])
            ax.plot(its, [100 * a for a in ap], marker='o', label=name)
    ax.set_xlabel('training iteration')
    ax.set_ylabel('COCO box AP (val)')
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def table(results: dict) -> str:
    names = list(results)
    its = sorted({i for r in results.values() for i, _, _ in r['curve']})
    head = '| iteration | ' + ' | '.join(f'{n} AP' for n in names) + ' |'
    lines = [head, '|' + '---|' * (len(names) + 1)]
    for it in its:
        row = []
        for n in names:
            d = {i: a for i, a, _ in results[n]['curve']}
            row.append(f'{100 * d[it]:.1f}' if it in d else '-')
        lines.append(f'| {it} | ' + ' | '.join(row) + ' |')
    lines.append('| AP50 (last) | ' + ' | '.join(
        f'{100 * results[n]["curve"][-1][2]:.1f}'
        if results[n]['curve'] else '-' for n in names) + ' |')
    lines.append('| train time (s) | ' + ' | '.join(
        f'{results[n].get("seconds", 0):.0f}' for n in names) + ' |')
    return '\n'.join(lines)


def main():
    args = parse_args()
    os.chdir(REPO)
    sys.path.insert(0, REPO)
    args.out = osp.abspath(args.out)
    os.makedirs(args.out, exist_ok=True)
    data_root = osp.join(args.out, 'data')
    from efficient_detr_mm.datasets import make_shapes_dataset
    make_shapes_dataset(
        data_root,
        num_train=args.num_train,
        num_val=args.num_val,
        img_size=tuple(args.img_size),
        seed=args.seed)
    results = {}
    for name, cfg_path in MODELS.items():
        key = KEYS[name]
        if key not in args.models:
            continue
        work_dir = osp.join(args.out, key)
        rec = dict(config=cfg_path)
        if not args.plot_only:
            cfg_file = study_config(cfg_path, args, data_root, key)
            print(f'[{time.strftime("%H:%M:%S")}] training {name} for '
                  f'{args.iters} iterations -> {work_dir}', flush=True)
            rec['seconds'] = train(cfg_file, work_dir, args.device)
            with open(osp.join(work_dir, 'study_time.json'), 'w') as f:
                json.dump(dict(seconds=rec['seconds']), f)
        elif osp.exists(osp.join(work_dir, 'study_time.json')):
            with open(osp.join(work_dir, 'study_time.json')) as f:
                rec['seconds'] = json.load(f)['seconds']
        rec['curve'] = read_curve(work_dir)
        results[name] = rec
        print(table({name: rec}), flush=True)
    title = (f'synthetic shapes, {args.num_train} train imgs, batch '
             f'{args.batch_size}, {args.iters} iters, {args.device}')
    md = table(results)
    print('\n' + title + '\n' + md)
    plot(results, osp.join(args.out, 'ap_vs_iter.png'), title)
    with open(osp.join(args.out, 'results.json'), 'w') as f:
        json.dump(dict(args=vars(args), results=results), f, indent=1)
    with open(osp.join(args.out, 'results.md'), 'w') as f:
        f.write(title + '\n\n' + md + '\n')
    print(f'plot: {osp.join(args.out, "ap_vs_iter.png")}')


if __name__ == '__main__':
    main()
