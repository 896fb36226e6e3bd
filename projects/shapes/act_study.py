"""ACT / MTKD study on the tiny DETR-DC5 for synthetic shapes (CPU).

    OMP_NUM_THREADS=1 python projects/shapes/act_study.py \
        [--work-dir /tmp/act_study] [--train-epochs 25] [--mtkd-epochs 2]

1. generates a synthetic-shapes dataset (``--num-train`` / ``--num-val``);
2. trains the tiny DETR-DC5 (configs/detr/detr_r18-tiny-dc5_1xb4-12e_shapes.py)
   for ``--train-epochs`` epochs (the iteration count is printed);
3. evaluates its checkpoint with full attention and with ACT at each L
   (configs/act/act-l{L}_r18-tiny-dc5_1xb4-12e_shapes.py, no retraining,
   batch 1, fixed hash seed), recording prototypes per layer and the
   encoder multiply-adds (ACTAttention.flop_count with the run's real
   prototype counts + the FFNs; averaged over the val images);
4. fine-tunes the DETR checkpoint with MTKD at each L
   (configs/act/act-l{L}-mtkd_r18-tiny-dc5_1xb4-4e_shapes.py) and, as a
   control with the same number of extra iterations, without MTKD (plain
   DETR training); evaluates both with ACT;
5. prints the table (also written to ``<work-dir>/act_study.json``).
"""
import argparse
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


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--work-dir', default='/tmp/act_study')
    p.add_argument('--data-root', default=None,
                   help='default: <work-dir>/shapes')
    p.add_argument('--num-train', type=int, default=100)
    p.add_argument('--num-val', type=int, default=50)
    p.add_argument('--train-epochs', type=int, default=25)
    p.add_argument('--train-lr', type=float, default=2e-4)
    p.add_argument('--backbone-lr-mult', type=float, default=None,
                   help="override the config's backbone lr_mult (0.1)")
    p.add_argument('--init-from', default=None,
                   help='start the DETR training from this checkpoint '
                   '(weights only), e.g. a previous run of this script')
    p.add_argument('--init-iters', type=int, default=0,
                   help='iterations already done by --init-from (reported)')
    p.add_argument('--mtkd-epochs', type=int, default=2)
    p.add_argument('--mtkd-lr', type=float, default=5e-5)
    p.add_argument('--ls', type=int, nargs='+', default=[16, 20, 24, 32])
    p.add_argument('--mtkd-ls', type=int, nargs='+', default=None,
                   help='L values fine-tuned with MTKD (default: --ls)')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--toolkit-flops', type=int, default=0, metavar='N',
                   help='only count encoder MACs with the analysis toolkit '
                   '(efficient_detr_mm.analysis) on the first N val images '
                   'for the checkpoints already in --work-dir')
    p.add_argument('--gap', type=int, default=0, metavar='N',
                   help='only measure, on the first N val images, how far '
                   'the ACT predictions are from the same weights\' full-'
                   'attention predictions, for the checkpoints already in '
                   '--work-dir')
    return p.parse_args()


def _data_cfg(cfg, root, seed, work_dir):
    root = root.rstrip('/') + '/'
    for split in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[split].dataset.data_root = root
        cfg[split].num_workers = 0
        cfg[split].persistent_workers = False
    for ev in ('val_evaluator', 'test_evaluator'):
        cfg[ev].ann_file = root + 'annotations/instances_val.json'
    cfg.test_dataloader.batch_size = 1  # the paper evaluates at batch 1
    cfg.default_hooks.visualization.draw = False
    cfg.default_hooks.logger.interval = 25
    cfg.randomness = dict(seed=seed)
    cfg.work_dir = work_dir
    return cfg


def _schedule(cfg, epochs, lr=None):
    cfg.train_cfg.max_epochs = epochs
    cfg.train_cfg.val_interval = epochs + 1  # no val during training
    cfg.param_scheduler = [
        dict(
            type='MultiStepLR',
            end=epochs,
            by_epoch=True,
            milestones=[max(1, int(epochs * 0.8))])
    ]
    cfg.default_hooks.checkpoint = dict(
        type='CheckpointHook', interval=epochs, max_keep_ckpts=1)
    if lr is not None:
        cfg.optim_wrapper.optimizer.lr = lr
    return cfg


def train(cfg_path,
          root,
          work_dir,
          epochs,
          seed,
          load_from=None,
          lr=None,
          backbone_lr_mult=None):
    from mmengine.config import Config
    from mmengine.runner import Runner
    cfg = _schedule(
        _data_cfg(Config.fromfile(cfg_path), root, seed, work_dir), epochs,
        lr)
    if backbone_lr_mult is not None:
        cfg.optim_wrapper.paramwise_cfg.custom_keys.backbone.lr_mult = \
            backbone_lr_mult
    cfg.load_from = load_from
    runner = Runner.from_cfg(cfg)
    runner.train()
    iters = runner.iter
    ckpt = osp.join(work_dir, f'epoch_{epochs}.pth')
    return ckpt, iters


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
                layer.self_attn.register_forward_hook(
                    self._attn_hook, with_kwargs=True))
            self.handles.append(
                layer.ffn.register_forward_hook(self._ffn_hook))
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


def evaluate(cfg_path, ckpt, root, work_dir, seed, act=True):
    """Test ``ckpt`` with ``cfg_path``; returns (metrics, prototype
    fractions per layer, encoder MACs per image, tokens per image)."""
    from mmengine.config import Config
    from mmengine.runner import Runner
    cfg = _data_cfg(Config.fromfile(cfg_path), root, seed, work_dir)
    if act:
        cfg.model.act_cfg = dict(cfg.model.get('act_cfg', {}), seed=seed)
    cfg.load_from = ckpt
    runner = Runner.from_cfg(cfg)
    model = runner.model
    counter = EncoderFlops(model)
    if hasattr(model, 'reset_act_stats'):
        model.reset_act_stats()
    metrics = runner.test()
    counter.remove()
    stats = model.prototype_stats() if hasattr(model,
                                               'prototype_stats') else {}
    return metrics, stats, counter.per_image()


def toolkit_flops(args):
    """Encoder MACs per image with efficient_detr_mm.analysis (jit trace +
    ACTAttention.flop_count), averaged over the first N val images."""
    import glob

    import mmcv
    import torch
    from mmengine.config import Config

    from efficient_detr_mm.analysis.flops import count_detector_flops
    from efficient_detr_mm.analysis.inputs import build_detector, preprocess
    root = args.data_root or osp.join(args.work_dir, 'shapes')
    imgs = sorted(glob.glob(osp.join(root, 'val', '*')))[:args.toolkit_flops]
    images = [
        torch.from_numpy(mmcv.imread(p)).permute(2, 0, 1).contiguous()
        for p in imgs
    ]
    ckpts = [('DETR (full attention)', DETR_CFG, None, 'detr')]
    ckpts += [(f'ACT L={L}', ACT_CFG.format(L), L, 'detr') for L in args.ls]
    ckpts += [(f'ACT L={L} +MTKD', ACT_CFG.format(L), L, f'mtkd_l{L}')
              for L in (args.mtkd_ls or args.ls)]
    print(f'encoder MACs per image, analysis toolkit, {len(images)} val '
          'images at batch 1')
    for name, cfg_path, L, sub in ckpts:
        found = sorted(glob.glob(osp.join(args.work_dir, sub, 'epoch_*.pth')))
        if not found:
            continue
        cfg = Config.fromfile(cfg_path)
        if L is not None:
            cfg.model.act_cfg = dict(cfg.model.act_cfg, seed=args.seed)
        model = build_detector(cfg, checkpoint=found[-1])
        total = 0
        for img in images:
            batch = preprocess(model, [img])
            res = count_detector_flops(model, batch['inputs'],
                                       batch['data_samples'])
            total += res.by_part['encoder']
        print(f'{name:<24}{total / len(images) / 1e6:>10.2f} MMACs '
              f'({found[-1]})')


def prediction_gap(args):
    """ACT vs full attention with the same weights: mean |box difference|
    (normalised cx, cy, w, h) and mean KL(full || ACT) of the class
    distributions of the last decoder layer, over the first N val images
    (batch 1, fixed hash seed)."""
    import glob

    import torch
    from mmengine.config import Config
    from mmengine.dataset import Compose

    from efficient_detr_mm.act import act_enabled
    from efficient_detr_mm.analysis.inputs import build_detector
    root = (args.data_root or osp.join(args.work_dir, 'shapes')).rstrip('/')
    imgs = sorted(glob.glob(osp.join(root, 'val', '*')))[:args.gap]
    mtkd_ls = args.mtkd_ls or args.ls
    runs = [(f'ACT L={L}', L, 'detr') for L in args.ls]
    runs += [(f'ACT L={L} +plain ft', L, 'ft_plain') for L in mtkd_ls]
    runs += [(f'ACT L={L} +MTKD', L, f'mtkd_l{L}') for L in mtkd_ls]
    print(f'ACT vs full attention, same weights, {len(imgs)} val images')
    print(f'{"model":<24}{"|dbox|":>10}{"KL(cls)":>10}{"same top1":>11}')
    out = []
    for name, L, sub in runs:
        found = sorted(glob.glob(osp.join(args.work_dir, sub, 'epoch_*.pth')))
        if not found:
            continue
        cfg = Config.fromfile(ACT_CFG.format(L))
        cfg.model.act_cfg = dict(cfg.model.act_cfg, seed=args.seed)
        model = build_detector(cfg, checkpoint=found[-1])
        steps = [
            t for t in cfg.test_dataloader.dataset.pipeline
            if t['type'] != 'LoadAnnotations'
        ]
        pipe = Compose(steps)
        dbox = kl = same = n = 0.
        for i, path in enumerate(imgs):
            data = pipe(dict(img_path=path, img_id=i))
            batch = model.data_preprocessor(
                dict(
                    inputs=[data['inputs']],
                    data_samples=[data['data_samples']]), False)
            x, samples = batch['inputs'], batch['data_samples']
            with torch.no_grad():
                cls_a, box_a = model._forward(x, samples)
                with act_enabled(model, False):
                    cls_f, box_f = model._forward(x, samples)
            pa = cls_a[-1].float().log_softmax(-1)
            pf = cls_f[-1].float().log_softmax(-1)
            dbox += (box_a[-1] - box_f[-1]).abs().mean().item()
            kl += (pf.exp() * (pf - pa)).sum(-1).mean().item()
            same += (pa.argmax(-1) == pf.argmax(-1)).float().mean().item()
            n += 1
        row = dict(
            model=name, dbox=dbox / n, kl=kl / n, same_top1=same / n)
        out.append(row)
        print(f'{name:<24}{row["dbox"]:>10.4f}{row["kl"]:>10.4f}'
              f'{row["same_top1"]:>11.3f}  ({found[-1]})')
    with open(osp.join(args.work_dir, 'act_gap.json'), 'w') as f:
        json.dump(out, f, indent=1)


def main():
    args = parse_args()
    os.chdir(REPO)
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
    make_shapes_dataset(
        root, num_train=args.num_train, num_val=args.num_val, seed=0)
    mtkd_ls = args.mtkd_ls or args.ls
    results = dict(args=vars(args), rows=[])

    def log(msg):
        print(f'[act_study {time.time() - t0:6.0f}s] {msg}', flush=True)

    def row(name, metrics, stats, flops, iters):
        r = dict(
            model=name,
            mAP=metrics['coco/bbox_mAP'],
            mAP50=metrics['coco/bbox_mAP_50'],
            protos=stats,
            enc_macs=flops,
            iters=iters)
        results['rows'].append(r)
        log(f'{name}: {r}')
        with open(osp.join(wd, 'act_study.json'), 'w') as f:
            json.dump(results, f, indent=1)

    log('training the tiny DETR-DC5')
    detr_ckpt, iters = train(
        DETR_CFG,
        root,
        osp.join(wd, 'detr'),
        args.train_epochs,
        args.seed,
        load_from=args.init_from,
        lr=args.train_lr,
        backbone_lr_mult=args.backbone_lr_mult)
    iters += args.init_iters
    results['train_iters'] = iters
    log(f'trained {iters} iterations -> {detr_ckpt}')
    m, s, f = evaluate(DETR_CFG, detr_ckpt, root, osp.join(wd, 'eval'),
                       args.seed, act=False)
    row('DETR (full attention)', m, s, f, iters)
    for L in args.ls:
        m, s, f = evaluate(ACT_CFG.format(L), detr_ckpt, root,
                           osp.join(wd, 'eval'), args.seed)
        row(f'ACT L={L}', m, s, f, iters)

    # control: the same extra iterations without MTKD (plain DETR loss)
    ctrl_ckpt, ft_iters = train(
        DETR_CFG, root, osp.join(wd, 'ft_plain'), args.mtkd_epochs,
        args.seed, load_from=detr_ckpt, lr=args.mtkd_lr)
    m, s, f = evaluate(DETR_CFG, ctrl_ckpt, root, osp.join(wd, 'eval'),
                       args.seed, act=False)
    row('DETR +plain ft (full attention)', m, s, f, iters + ft_iters)
    for L in mtkd_ls:
        m, s, f = evaluate(ACT_CFG.format(L), ctrl_ckpt, root,
                           osp.join(wd, 'eval'), args.seed)
        row(f'ACT L={L} +plain ft', m, s, f, iters + ft_iters)
    for L in mtkd_ls:
        ckpt, ft_iters = train(
            MTKD_CFG.format(L), root, osp.join(wd, f'mtkd_l{L}'),
            args.mtkd_epochs, args.seed, load_from=detr_ckpt,
            lr=args.mtkd_lr)
        m, s, f = evaluate(ACT_CFG.format(L), ckpt, root,
                           osp.join(wd, 'eval'), args.seed)
        row(f'ACT L={L} +MTKD', m, s, f, iters + ft_iters)
        m, s, f = evaluate(DETR_CFG, ckpt, root, osp.join(wd, 'eval'),
                           args.seed, act=False)
        row(f'MTKD L={L} weights, ACT off', m, s, f, iters + ft_iters)

    print('\n' + '=' * 78)
    print(f'tiny DETR-DC5 R18 on shapes ({args.num_train} train / '
          f'{args.num_val} val), {results["train_iters"]} training iters')
    print(f'{"model":<34}{"mAP":>7}{"mAP50":>7}{"protos/tokens":>18}'
          f'{"enc MMACs":>11}{"iters":>7}')
    for r in results['rows']:
        protos = ' '.join(f'{v:.2f}' for v in r['protos'].values()) or '1'
        print(f'{r["model"]:<34}{r["mAP"]:>7.3f}{r["mAP50"]:>7.3f}'
              f'{protos:>18}{r["enc_macs"] / 1e6:>11.1f}{r["iters"]:>7}')
    print(f'total {time.time() - t0:.0f}s; json: '
          f'{osp.join(wd, "act_study.json")}')


if __name__ == '__main__':
    main()
