"""ACT / MTKD study on the tiny DETR-DC5 for synthetic shapes (CPU).

    OMP_NUM_THREADS=1 python projects/shapes/act_study.py \
        --work-dir /tmp/act_study [--train-iters 4000] [--mtkd-iters 200]

1. generates a synthetic-shapes dataset (``--num-train`` / ``--num-val``);
2. trains the tiny DETR-DC5 (configs/detr/detr_r18-tiny-dc5_1xb4-12e_shapes.py)
   for ``--train-iters`` iterations at a constant lr (or takes an existing
   checkpoint with ``--checkpoint``);
3. ``eval``: evaluates that checkpoint with full attention and with ACT at
   each L (configs/act/act-l{L}_r18-tiny-dc5_1xb4-12e_shapes.py, no
   retraining, batch 1, fixed hash seed), recording prototypes per layer and
   the encoder multiply-adds (ACTAttention.flop_count with the run's real
   prototype counts + the FFNs; averaged over the val images);
4. ``control``: fine-tunes the checkpoint ``--mtkd-iters`` more iterations
   with the plain DETR loss and evaluates it with full attention and ACT;
5. ``mtkd``: fine-tunes the checkpoint with MTKD at each L
   (configs/act/act-l{L}-mtkd_r18-tiny-dc5_1xb4-4e_shapes.py) for the same
   number of iterations and evaluates it with ACT (and with ACT off);
6. prints the table and writes ``<work-dir>/act_study.json``.

``--stages`` runs a subset, so the stages can run as parallel processes
(one core each, separate ``--work-dir``) on one checkpoint; ``--report
A/act_study.json B/act_study.json`` prints their merged table.
``--cls-loss focal`` swaps DETR's softmax cross-entropy for sigmoid focal
loss + focal matching cost in every model of the study (as SMCA does; ACT
only changes the encoder, and in the CPU runs on configs/act/README.md the
focal variant left 0 AP slightly sooner).  ``--eval-split train`` measures
AP on the training images (memorisation), ``--backbone-from`` starts from
another model's ResNet weights.  ``--gap N`` / ``--toolkit-flops N``
measure the ACT-vs-full prediction gap / count encoder MACs with the
analysis toolkit for the checkpoints already in ``--work-dir``.
"""
import argparse
import glob
import json
import os
import os.path as osp
import sys
import time

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, REPO)

DETR_CFG = 'configs/detr/detr_r18-tiny-dc5_1xb4-12e_shapes.py'
ACT_CFG = 'configs/act/act-l{}_r18-tiny-dc5_1xb4-12e_shapes.py'
MTKD_CFG = 'configs/act/act-l{}-mtkd_r18-tiny-dc5_1xb4-4e_shapes.py'
STAGES = ('eval', 'control', 'mtkd')


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--work-dir', default='/tmp/act_study')
    p.add_argument('--data-root',
                   default=None,
                   help='default: <work-dir>/shapes')
    p.add_argument('--num-train', type=int, default=400)
    p.add_argument('--num-val', type=int, default=50)
    p.add_argument('--eval-split',
                   default='val',
                   choices=['val', 'train'],
                   help="'train': evaluate on the training images (what a "
                   'memorised model has learnt; for budgets too short to '
                   'generalise)')
    p.add_argument('--train-iters', type=int, default=4000)
    p.add_argument('--train-lr', type=float, default=2e-4)
    p.add_argument('--backbone-lr-mult',
                   type=float,
                   default=1.0,
                   help='ResNet-18 is trained from scratch: full lr by '
                   'default (the config keeps the 0.1 of a pretrained one)')
    p.add_argument('--backbone-from',
                   default=None,
                   metavar='CKPT',
                   help="initialise the DETR's ResNet-18 from the "
                   "'backbone.*' weights of this checkpoint (e.g. the "
                   "tiny DINO of `make demo`), as DETR starts from an "
                   'ImageNet-pretrained backbone')
    p.add_argument('--val-interval',
                   type=int,
                   default=None,
                   help='validate during the DETR training every N '
                   'iterations (default: only at the end)')
    p.add_argument('--init-from',
                   default=None,
                   metavar='CKPT',
                   help='start the DETR training from the weights of this '
                   'checkpoint, e.g. a shorter run of this script')
    p.add_argument('--init-iters',
                   type=int,
                   default=0,
                   help='iterations already done by --init-from (reported)')
    p.add_argument('--checkpoint',
                   default=None,
                   help='skip the DETR training and study this checkpoint')
    p.add_argument('--checkpoint-iters',
                   type=int,
                   default=None,
                   help='iterations the --checkpoint was trained (reported; '
                   "default: read from its 'meta')")
    p.add_argument('--mtkd-iters', type=int, default=200)
    p.add_argument('--mtkd-lr', type=float, default=5e-5)
    p.add_argument('--ls', type=int, nargs='+', default=[16, 20, 24, 32])
    p.add_argument('--mtkd-ls',
                   type=int,
                   nargs='+',
                   default=None,
                   help='L values fine-tuned with MTKD (default: --ls)')
    p.add_argument('--stages', nargs='+', default=list(STAGES), choices=STAGES)
    p.add_argument('--cls-loss', default='ce', choices=['ce', 'focal'])
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--report',
                   nargs='+',
                   default=None,
                   metavar='JSON',
                   help='only print the merged table of these results')
    p.add_argument('--toolkit-flops',
                   type=int,
                   default=0,
                   metavar='N',
                   help='only count encoder MACs with the analysis toolkit '
                   '(efficient_detr_mm.analysis) on the first N val images '
                   'for the checkpoints already in --work-dir')
    p.add_argument('--gap',
                   type=int,
                   default=0,
                   metavar='N',
                   help='only measure, on the first N val images, how far '
                   'the ACT predictions are from the same weights\' full-'
                   'attention predictions, for the checkpoints already in '
                   '--work-dir')
    args = p.parse_args(argv)
    for name in ('checkpoint', 'backbone_from', 'init_from'):
        path = getattr(args, name)
        if path is not None and not osp.isfile(path):
            p.error(f'--{name.replace("_", "-")} {path}: no such file')
    for name in ('train_iters', 'mtkd_iters'):
        if getattr(args, name) < 1:
            p.error(f'--{name.replace("_", "-")} must be >= 1')
    return args


def load_config(path, args, L=None):
    """The shipped config at ``path`` with the study's changes: the
    classification loss (``--cls-loss``) and, for ACT, a fixed hash seed."""
    from mmengine.config import Config
    cfg = Config.fromfile(osp.join(REPO, path))
    if args.cls_loss == 'focal':
        cfg.model.bbox_head.loss_cls = dict(type='FocalLoss',
                                            use_sigmoid=True,
                                            gamma=2.0,
                                            alpha=0.25,
                                            loss_weight=2.0)
        cfg.model.train_cfg.assigner.match_costs[0] = dict(
            type='FocalLossCost', weight=2.0)
    if L is not None:
        cfg.model.act_cfg = dict(cfg.model.get('act_cfg', {}), seed=args.seed)
    return cfg


def _data_cfg(cfg, root, seed, work_dir, eval_split='val'):
    from efficient_detr_mm.datasets import use_shapes_root
    use_shapes_root(cfg, root, eval_split, num_workers=0)
    cfg.test_dataloader.batch_size = 1  # the paper evaluates at batch 1
    cfg.default_hooks.visualization.draw = False
    cfg.randomness = dict(seed=seed)
    cfg.work_dir = work_dir
    return cfg


def _schedule(cfg, iters, lr, backbone_lr_mult=None, val_interval=None):
    """Iteration-based training at a constant lr (no drop), one checkpoint
    at the end (or every ``val_interval``)."""
    from projects.shapes.study_utils import iteration_schedule
    iteration_schedule(cfg, iters, lr, val_interval or iters + 1,
                       val_interval or iters)
    if backbone_lr_mult is not None:
        cfg.optim_wrapper.paramwise_cfg.custom_keys.backbone.lr_mult = \
            backbone_lr_mult
    return cfg


def last_checkpoint(work_dir):
    """The newest ``iter_*.pth`` in ``work_dir`` or None."""
    found = glob.glob(osp.join(work_dir, 'iter_*.pth'))
    if not found:
        return None
    return max(found, key=lambda p: int(osp.basename(p)[5:-4]))


def backbone_from(cfg, ckpt):
    """Initialise the backbone from the ``backbone.*`` weights of
    ``ckpt``."""
    cfg.model.backbone.init_cfg = dict(type='Pretrained',
                                       checkpoint=ckpt,
                                       prefix='backbone.')
    return cfg


def train(cfg,
          root,
          work_dir,
          iters,
          lr,
          seed,
          load_from=None,
          backbone_lr_mult=None,
          val_interval=None,
          eval_split='val'):
    from mmengine.runner import Runner
    cfg = _schedule(_data_cfg(cfg, root, seed, work_dir, eval_split), iters,
                    lr, backbone_lr_mult, val_interval)
    cfg.load_from = load_from
    runner = Runner.from_cfg(cfg)
    runner.train()
    return osp.join(work_dir, f'iter_{iters}.pth'), runner.iter


class EncoderFlops:
    """Accumulates the encoder's multiply-adds per image during a test run:
    each self-attention's ``flop_count`` (ACT: real prototype counts) plus
    the FFN linears."""

    def __init__(self, model):
        self.total = 0
        self.images = 0
        self.handles = []
        for layer in model.encoder.layers:
            self.handles.append(
                layer.self_attn.register_forward_hook(self._attn_hook,
                                                      with_kwargs=True))
            self.handles.append(layer.ffn.register_forward_hook(
                self._ffn_hook))
        self.handles.append(
            model.encoder.register_forward_hook(self._count_images))

    def _attn_hook(self, mod, args, kwargs, out):
        if hasattr(mod, 'flop_count'):
            self.total += mod.flop_count(args, kwargs, out)
        else:  # mmcv MultiheadAttention: dense
            q = args[0] if args else kwargs['query']
            bs, n, c = q.shape
            self.total += bs * (4 * n * c * c + 2 * n * n * c)

    def _ffn_hook(self, mod, args, out):
        x = args[0]
        tokens = x.shape[0] * x.shape[1]
        for m in mod.modules():
            if m.__class__.__name__ == 'Linear':
                self.total += tokens * m.in_features * m.out_features

    def _count_images(self, mod, args, out):
        self.images += out.shape[0]

    def per_image(self):
        return self.total / max(self.images, 1)

    def remove(self):
        for h in self.handles:
            h.remove()


def class_agnostic_ap(ann_file, det_file):
    """COCO box AP and AP50 ignoring the class (pycocotools ``useCats=0``):
    how well the boxes are found, whatever label they get.  Detections of
    one query under several labels (sigmoid heads) count once, with their
    best score."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    with open(det_file) as f:
        dets = json.load(f)
    best = {}
    for d in dets:
        key = (d['image_id'], tuple(d['bbox']))
        if key not in best or d['score'] > best[key]['score']:
            best[key] = d
    if not best:
        return 0.0, 0.0
    gt = COCO(ann_file)
    ev = COCOeval(gt, gt.loadRes(list(best.values())), 'bbox')
    ev.params.useCats = 0
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    return float(ev.stats[0]), float(ev.stats[1])


def evaluate(cfg, ckpt, root, work_dir, seed, eval_split='val'):
    """Test ``ckpt`` with ``cfg``; returns (metrics + class-agnostic AP,
    prototype fractions per layer, encoder MACs per image)."""
    from mmengine.runner import Runner
    cfg = _data_cfg(cfg, root, seed, work_dir, eval_split)
    prefix = osp.join(work_dir, 'dets')
    cfg.test_evaluator.outfile_prefix = prefix
    cfg.default_hooks.logger.interval = 25
    cfg.load_from = ckpt
    runner = Runner.from_cfg(cfg)
    model = runner.model
    counter = EncoderFlops(model)
    if hasattr(model, 'reset_act_stats'):
        model.reset_act_stats()
    metrics = dict(runner.test())
    counter.remove()
    metrics['agnostic_mAP'], metrics['agnostic_mAP_50'] = class_agnostic_ap(
        cfg.test_evaluator.ann_file, prefix + '.bbox.json')
    stats = model.prototype_stats() if hasattr(model,
                                               'prototype_stats') else {}
    return metrics, stats, counter.per_image()


def _checkpoint_iters(ckpt):
    from efficient_detr_mm.runtime import safe_load
    meta = safe_load(ckpt).get('meta', {})
    return int(meta.get('iter', 0))


def _val_images(args, n):
    root = (args.data_root or osp.join(args.work_dir, 'shapes')).rstrip('/')
    return sorted(glob.glob(osp.join(root, args.eval_split, '*')))[:n]


def _study_checkpoints(args):
    """(name, L or None, checkpoint) of the runs already in --work-dir."""
    mtkd_ls = args.mtkd_ls or args.ls
    detr = args.checkpoint or last_checkpoint(osp.join(args.work_dir, 'detr'))
    ctrl = last_checkpoint(osp.join(args.work_dir, 'ft_plain'))
    runs = [('DETR (full attention)', None, detr)]
    runs += [(f'ACT L={L}', L, detr) for L in args.ls]
    runs += [(f'ACT L={L} +plain ft', L, ctrl) for L in mtkd_ls]
    runs += [(f'ACT L={L} +MTKD', L,
              last_checkpoint(osp.join(args.work_dir, f'mtkd_l{L}')))
             for L in mtkd_ls]
    return [r for r in runs if r[2] is not None]


def toolkit_flops(args):
    """Encoder MACs per image with efficient_detr_mm.analysis (jit trace +
    ACTAttention.flop_count), averaged over the first N val images."""
    import mmcv
    import torch

    from efficient_detr_mm.analysis.flops import count_detector_flops
    from efficient_detr_mm.analysis.inputs import build_detector, preprocess
    images = [
        torch.from_numpy(mmcv.imread(p)).permute(2, 0, 1).contiguous()
        for p in _val_images(args, args.toolkit_flops)
    ]
    print(f'encoder MACs per image, analysis toolkit, {len(images)} '
          f'{args.eval_split} images at batch 1')
    for name, L, ckpt in _study_checkpoints(args):
        if L is None:
            cfg = load_config(DETR_CFG, args)
        else:
            cfg = load_config(ACT_CFG.format(L), args, L)
        model = build_detector(cfg, checkpoint=ckpt)
        total = 0
        for img in images:
            batch = preprocess(model, [img])
            res = count_detector_flops(model, batch['inputs'],
                                       batch['data_samples'])
            total += res.by_part['encoder']
        print(f'{name:<24}{total / len(images) / 1e6:>10.2f} MMACs '
              f'({ckpt})')


def prediction_gap(args):
    """ACT vs full attention with the same weights: mean |box difference|
    (normalised cx, cy, w, h), mean divergence of the class scores (KL of
    the softmax for cross-entropy, mean Bernoulli KL per class for focal)
    and the share of queries whose top class agrees, last decoder layer,
    first N val images (batch 1, fixed hash seed)."""
    import torch
    from mmengine.dataset import Compose

    from efficient_detr_mm.act import act_enabled
    from efficient_detr_mm.analysis.inputs import build_detector
    imgs = _val_images(args, args.gap)
    print(f'ACT vs full attention, same weights, {len(imgs)} '
          f'{args.eval_split} images')
    print(f'{"model":<24}{"|dbox|":>10}{"KL(cls)":>10}{"same top1":>11}')
    out = []
    for name, L, ckpt in _study_checkpoints(args):
        if L is None:
            continue
        cfg = load_config(ACT_CFG.format(L), args, L)
        model = build_detector(cfg, checkpoint=ckpt)
        steps = [
            t for t in cfg.test_dataloader.dataset.pipeline
            if t['type'] != 'LoadAnnotations'
        ]
        pipe = Compose(steps)
        dbox = kl = same = n = 0.
        for i, path in enumerate(imgs):
            data = pipe(dict(img_path=path, img_id=i))
            batch = model.data_preprocessor(
                dict(inputs=[data['inputs']],
                     data_samples=[data['data_samples']]), False)
            x, samples = batch['inputs'], batch['data_samples']
            with torch.no_grad():
                cls_a, box_a = model._forward(x, samples)
                with act_enabled(model, False):
                    cls_f, box_f = model._forward(x, samples)
            la, lf = cls_a[-1].float(), cls_f[-1].float()
            if args.cls_loss == 'focal':
                pf, pa = lf.sigmoid(), la.sigmoid()
                eps = 1e-6
                kl += (pf * ((pf + eps) / (pa + eps)).log() + (1 - pf) *
                       ((1 - pf + eps) / (1 - pa + eps)).log()).mean().item()
            else:
                pa, pf = la.log_softmax(-1), lf.log_softmax(-1)
                kl += (pf.exp() * (pf - pa)).sum(-1).mean().item()
            dbox += (box_a[-1] - box_f[-1]).abs().mean().item()
            same += (la.argmax(-1) == lf.argmax(-1)).float().mean().item()
            n += 1
        row = dict(model=name, dbox=dbox / n, kl=kl / n, same_top1=same / n)
        out.append(row)
        print(f'{name:<24}{row["dbox"]:>10.4f}{row["kl"]:>10.4f}'
              f'{row["same_top1"]:>11.3f}  ({ckpt})')
    with open(osp.join(args.work_dir, 'act_gap.json'), 'w') as f:
        json.dump(out, f, indent=1)


def print_table(results_list):
    rows = [r for res in results_list for r in res['rows']]
    first = results_list[0]
    a = first['args']
    print('\n' + '=' * 86)
    print(f'tiny DETR-DC5 R18 on shapes ({a["num_train"]} train / '
          f'{a["num_val"]} val), {first.get("train_iters")} training '
          f'iterations, cls loss {a.get("cls_loss", "ce")}, AP on the '
          f'{a.get("eval_split", "val")} split')
    print(f'{"model":<34}{"mAP":>7}{"mAP50":>7}{"agnAP":>7}{"agnAP50":>8}'
          f'{"protos/tokens":>15}{"enc MMACs":>11}{"iters":>7}')
    for r in rows:
        protos = ' '.join(f'{v:.2f}' for v in r['protos'].values()) or '1'
        print(f'{r["model"]:<34}{r["mAP"]:>7.3f}{r["mAP50"]:>7.3f}'
              f'{r["agnostic_mAP"]:>7.3f}{r["agnostic_mAP50"]:>8.3f}'
              f'{protos:>15}{r["enc_macs"] / 1e6:>11.1f}{r["iters"]:>7}')
    print('(agn = class-agnostic COCO AP: boxes found whatever the label)')


def main(argv=None):
    args = parse_args(argv)
    os.chdir(REPO)
    if args.report:
        results = []
        for path in args.report:
            with open(path) as f:
                results.append(json.load(f))
        print_table(results)
        return
    import efficient_detr_mm  # noqa: F401
    if args.toolkit_flops or args.gap:
        import warnings
        warnings.filterwarnings('ignore')
        from mmdet.utils import register_all_modules
        register_all_modules()
        if args.gap:
            return prediction_gap(args)
        return toolkit_flops(args)
    from efficient_detr_mm.datasets import make_shapes_dataset
    t0 = time.time()
    wd = args.work_dir
    root = args.data_root or osp.join(wd, 'shapes')
    make_shapes_dataset(root,
                        num_train=args.num_train,
                        num_val=args.num_val,
                        seed=0)
    mtkd_ls = args.mtkd_ls or args.ls
    results = dict(args=vars(args), rows=[])
    eval_dir = osp.join(wd, 'eval')

    def log(msg):
        print(f'[act_study {time.time() - t0:6.0f}s] {msg}', flush=True)

    def row(name, metrics, stats, flops, iters):
        r = dict(model=name,
                 mAP=metrics['coco/bbox_mAP'],
                 mAP50=metrics['coco/bbox_mAP_50'],
                 agnostic_mAP=metrics['agnostic_mAP'],
                 agnostic_mAP50=metrics['agnostic_mAP_50'],
                 protos=stats,
                 enc_macs=flops,
                 iters=iters)
        results['rows'].append(r)
        log(f'{name}: {r}')
        with open(osp.join(wd, 'act_study.json'), 'w') as f:
            json.dump(results, f, indent=1)

    def detr_cfg():
        return load_config(DETR_CFG, args)

    def act_cfg(L):
        return load_config(ACT_CFG.format(L), args, L)

    if args.checkpoint:
        detr_ckpt = args.checkpoint
        iters = args.checkpoint_iters
        if iters is None:
            iters = _checkpoint_iters(detr_ckpt)
    else:
        log(f'training the tiny DETR-DC5 for {args.train_iters} iterations')
        cfg = detr_cfg()
        if args.backbone_from:
            backbone_from(cfg, args.backbone_from)
        detr_ckpt, iters = train(cfg,
                                 root,
                                 osp.join(wd, 'detr'),
                                 args.train_iters,
                                 args.train_lr,
                                 args.seed,
                                 backbone_lr_mult=args.backbone_lr_mult,
                                 load_from=args.init_from,
                                 val_interval=args.val_interval,
                                 eval_split=args.eval_split)
        iters += args.init_iters
    results['train_iters'] = iters
    log(f'studying {detr_ckpt} ({iters} training iterations)')

    if 'eval' in args.stages:
        m, s, f = evaluate(detr_cfg(), detr_ckpt, root, eval_dir, args.seed,
                           args.eval_split)
        row('DETR (full attention)', m, s, f, iters)
        for L in args.ls:
            m, s, f = evaluate(act_cfg(L), detr_ckpt, root, eval_dir,
                               args.seed, args.eval_split)
            row(f'ACT L={L}', m, s, f, iters)

    ft = dict(iters=args.mtkd_iters,
              lr=args.mtkd_lr,
              seed=args.seed,
              load_from=detr_ckpt,
              backbone_lr_mult=args.backbone_lr_mult,
              eval_split=args.eval_split)
    if 'control' in args.stages:
        # the same extra iterations without MTKD (plain DETR loss)
        ckpt, _ = train(detr_cfg(), root, osp.join(wd, 'ft_plain'), **ft)
        m, s, f = evaluate(detr_cfg(), ckpt, root, eval_dir, args.seed,
                           args.eval_split)
        row('DETR +plain ft (full attention)', m, s, f,
            iters + args.mtkd_iters)
        for L in mtkd_ls:
            m, s, f = evaluate(act_cfg(L), ckpt, root, eval_dir, args.seed,
                               args.eval_split)
            row(f'ACT L={L} +plain ft', m, s, f, iters + args.mtkd_iters)
    if 'mtkd' in args.stages:
        for L in mtkd_ls:
            ckpt, _ = train(load_config(MTKD_CFG.format(L), args), root,
                            osp.join(wd, f'mtkd_l{L}'), **ft)
            m, s, f = evaluate(act_cfg(L), ckpt, root, eval_dir, args.seed,
                               args.eval_split)
            row(f'ACT L={L} +MTKD', m, s, f, iters + args.mtkd_iters)
            m, s, f = evaluate(detr_cfg(), ckpt, root, eval_dir, args.seed,
                               args.eval_split)
            row(f'MTKD L={L} weights, ACT off', m, s, f,
                iters + args.mtkd_iters)

    print_table([results])
    print(f'total {time.time() - t0:.0f}s; json: '
          f'{osp.join(wd, "act_study.json")}')


if __name__ == '__main__':
    main()
