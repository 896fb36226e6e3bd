"""Make the Focus-DETR (detrex) converter fixtures from the official code.

Builds the official detrex ``FOCUS_DETR`` (projects/focus_detr) with a
detectron2 ResNet-50 and a reduced transformer, fills it with the
deterministic weights of
:func:`efficient_detr_mm.converters.testing.official_like_state`, runs it
in eval mode on one fixed, already normalised input and saves what the test
needs to rebuild the same checkpoint and compare: key names + shapes + seed
(not the tensors: R-50 alone is ~100 MB), the input seed and shape, the
official per-decoder-layer logits and boxes and the final detections.  Two
weight sets are stored: ``plain`` and ``saturated`` (the encoder-output box
head biased so that reference boxes fall below 1e-3 / above 0.999, the
regime where the box-head ``inverse_sigmoid`` eps matters).

A second fixture holds a reduced detectron2 ``SwinTransformer`` (the class
detrex's Swin configs use) and its three output maps, for the Swin key map;
a third the key names and shapes (no values) of the full-size official
R-50, R-101 and Swin-T models of the released rows, for the configs.

Needs the official code only here (never in the tests)::

    python tests/data/make_focus_detr_detrex_fixture.py \
        --detrex-root /path/to/detrex --detectron2-root /path/to/detectron2 \
        [--site /path/to/extra/site-packages]

detrex needs detectron2 (its git submodule; not on PyPI) and, to import,
fvcore, iopath, omegaconf, hydra-core, pycocotools, timm, einops, scipy,
torchvision (give them with ``--site``).  Compiled and optional parts are
stubbed: ``detectron2._C`` and ``detrex._C`` (CPU tensors take detrex's
pure-PyTorch ``multi_scale_deformable_attn_pytorch`` path anyway),
``torchvision._meta_registrations`` (a CUDA-only torchvision build cannot
register its kernels; no torchvision op is used), ``wandb``, ``fairscale``,
``xformers`` and ``cv2`` (imported by unrelated detrex modules).
"""
import argparse
import importlib.abc
import importlib.machinery
import importlib.util
import os.path as osp
import subprocess
import sys
import types
from collections import OrderedDict

import torch

HERE = osp.dirname(osp.abspath(__file__))
REPO = osp.dirname(osp.dirname(HERE))

#: reduced hyper-parameters of the detector fixture (the rest is the
#: official focus_detr_r50_4scale_12ep config)
DETECTOR = dict(
    depth=50,
    embed_dim=256,  # fixed: the official OESM hard-codes 256 channels
    num_heads=8,
    feedforward_dim=512,  # official 2048
    num_encoder_layers=6,  # the official cascade has 6 entries
    num_decoder_layers=6,
    num_queries=100,  # official 900
    select_box_nums_for_evaluation=300,
    pos_temperature=10000,
    pos_offset=-0.5,
    # 40x60 + 20x30 + 10x15 + 5x8 = 3190 tokens: the last layer's set,
    # int(0.2 * 1596) = 319 tokens, holds the 300 OESM tokens the official
    # layer hard-codes
    input_shape=(1, 3, 320, 480),
    seed=2023,
    input_seed=7,
)
#: the saturated variant: this bias ~ N(0, std) pushes encoder proposals
#: (hence first-layer references) to the image borders
SATURATE = ('bbox_embed.6.layers.2.bias', 0.0, 12.0)

SWIN = dict(
    pretrain_img_size=224,
    embed_dim=32,  # Swin-T: 96
    depths=(2, 2, 2, 2),  # Swin-T: (2, 2, 6, 2)
    num_heads=(1, 2, 4, 8),  # Swin-T: (3, 6, 12, 24)
    window_size=7,
    out_indices=(1, 2, 3),
    input_shape=(1, 3, 100, 136),  # not a multiple of the window: padding
    seed=11,
    input_seed=5,
)

STUBS = ('detectron2._C', 'detrex._C', 'torchvision._meta_registrations',
         'wandb', 'fairscale', 'xformers', 'cv2')


class _StubFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Empty modules for the compiled / optional imports in ``STUBS``."""

    def find_spec(self, name, path=None, target=None):
        if any(name == s or name.startswith(s + '.') for s in STUBS):
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec):
        mod = types.ModuleType(spec.name)
        mod.__path__ = []
        mod.__version__ = '0.0.0'

        def getattr_(attr):
            if attr.startswith('__'):
                raise AttributeError(attr)
            return lambda *a, **k: None

        mod.__getattr__ = getattr_
        return mod

    def exec_module(self, module):
        pass


def _load_testing():
    """efficient_detr_mm/converters/testing.py without importing the
    package (which needs mmdet)."""
    path = osp.join(REPO, 'efficient_detr_mm', 'converters', 'testing.py')
    spec = importlib.util.spec_from_file_location('_fixture_testing', path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _commit(root):
    try:
        return subprocess.check_output(['git', '-C', root, 'rev-parse',
                                        'HEAD']).decode().strip()
    except Exception:  # noqa: BLE001  (an unpacked archive)
        return 'unknown'


def _aliases(model):
    """``alias key -> canonical key`` for tensors stored under several
    names (the first name in state-dict order of the top-level heads is
    canonical)."""
    by_ptr, aliases = {}, OrderedDict()
    names = list(model.state_dict(keep_vars=True).items())
    # canonical = the detector's own class_embed / bbox_embed names
    names.sort(key=lambda kv: 0 if kv[0].startswith(
        ('class_embed.', 'bbox_embed.')) else 1)
    for name, t in names:
        ptr = t.data_ptr()
        if ptr in by_ptr:
            aliases[name] = by_ptr[ptr]
        else:
            by_ptr[ptr] = name
    return aliases


def build_state(testing, spec, aliases, seed, overrides=()):
    """The official-format state dict: generated tensors for the canonical
    keys, aliases equal to their canonical tensor (as in a real
    checkpoint). The test does the same."""
    canonical = OrderedDict((k, s) for k, s in spec.items()
                            if k not in aliases)
    state = testing.official_like_state(canonical, seed, overrides)
    out = OrderedDict()
    for k in spec:
        out[k] = state[aliases[k]] if k in aliases else state[k]
    return out


def build_official(h, backbone=None):
    """The official detrex FOCUS_DETR with hyper-parameters ``h`` (keys of
    ``DETECTOR``) and a detectron2 ResNet of depth ``h['depth']`` or the
    given backbone module (+ its ``in_channels``)."""
    import torch.nn as nn
    from detectron2.layers import ShapeSpec
    from detectron2.modeling.backbone import BasicStem, ResNet
    from detrex.layers import PositionEmbeddingSine
    from detrex.modeling.neck import ChannelMapper
    from projects.focus_detr.modeling import (FOCUS_DETR,
                                              FOCUS_DETRTransformer,
                                              FOCUS_DETRTransformerDecoder,
                                              FOCUS_DETRTransformerEncoder)
    if backbone is None:
        backbone = ResNet(
            stem=BasicStem(in_channels=3, out_channels=64, norm='FrozenBN'),
            stages=ResNet.make_default_stages(
                depth=h['depth'], stride_in_1x1=False, norm='FrozenBN'),
            out_features=['res3', 'res4', 'res5'],
            freeze_at=1)
        features = ['res3', 'res4', 'res5']
        channels = [512, 1024, 2048]
    else:
        backbone, features, channels = backbone
    return FOCUS_DETR(
        backbone=backbone,
        position_embedding=PositionEmbeddingSine(
            num_pos_feats=128,
            temperature=h['pos_temperature'],
            normalize=True,
            offset=h['pos_offset']),
        neck=ChannelMapper(
            input_shapes={
                f: ShapeSpec(channels=c)
                for f, c in zip(features, channels)
            },
            in_features=features,
            out_channels=256,
            num_outs=4,
            kernel_size=1,
            norm_layer=nn.GroupNorm(num_groups=32, num_channels=256)),
        transformer=FOCUS_DETRTransformer(
            encoder=FOCUS_DETRTransformerEncoder(
                embed_dim=h['embed_dim'],
                num_heads=h['num_heads'],
                feedforward_dim=h['feedforward_dim'],
                attn_dropout=0.0,
                ffn_dropout=0.0,
                num_layers=h['num_encoder_layers'],
                post_norm=False,
                num_feature_levels=4),
            decoder=FOCUS_DETRTransformerDecoder(
                embed_dim=h['embed_dim'],
                num_heads=h['num_heads'],
                feedforward_dim=h['feedforward_dim'],
                attn_dropout=0.0,
                ffn_dropout=0.0,
                num_layers=h['num_decoder_layers'],
                return_intermediate=True,
                num_feature_levels=4),
            num_feature_levels=4,
            two_stage_num_proposals=h['num_queries']),
        embed_dim=h['embed_dim'],
        num_classes=80,
        num_queries=h['num_queries'],
        criterion=None,
        aux_loss=True,
        select_box_nums_for_evaluation=h['select_box_nums_for_evaluation'],
        device='cpu',
        dn_number=100,
        label_noise_ratio=0.5,
        box_noise_scale=1.0)


def make_detector(testing, commits):
    h = DETECTOR
    model = build_official(DETECTOR)
    model.eval()
    # the fixture input is already normalised
    model.normalizer = lambda x: x
    spec = OrderedDict(
        (k, tuple(v.shape)) for k, v in model.state_dict().items())
    aliases = _aliases(model)
    image = testing.random_input(h['input_shape'], h['input_seed'])[0]
    _, H, W = image.shape

    captured = {}
    orig_aux = model._set_aux_loss

    def set_aux_loss(outputs_class, outputs_coord):
        captured['logits'] = outputs_class[:, 0].clone()
        captured['boxes'] = outputs_coord[:, 0].clone()
        return orig_aux(outputs_class, outputs_coord)

    model._set_aux_loss = set_aux_loss

    def transformer_hook(module, args, output):
        captured['fts_logits'] = output[5][0, :, 0].clone()
        captured['enc_boxes'] = output[4][0].clone()

    model.transformer.register_forward_hook(transformer_hook)

    variants = OrderedDict()
    for name, overrides in (('plain', ()), ('saturated', (SATURATE, ))):
        state = build_state(testing, spec, aliases, h['seed'], overrides)
        model.load_state_dict(state, strict=True)
        with torch.no_grad():
            results = model([dict(image=image, height=H, width=W)])
        inst = results[0]['instances']
        variants[name] = dict(
            overrides=list(overrides),
            logits=captured['logits'],
            boxes=captured['boxes'],
            fts_logits=captured['fts_logits'],
            enc_boxes=captured['enc_boxes'],
            det_boxes=inst.pred_boxes.tensor.clone(),
            det_scores=inst.scores.clone(),
            det_labels=inst.pred_classes.clone(),
            # checksums of the regenerated weights (the test checks them)
            state_sums=OrderedDict(
                (k, float(v.double().abs().sum())) for k, v in state.items()
                if k not in aliases))
        refs = captured['boxes'][0]
        print(f'{name}: layer-0 boxes within 1e-3 of a border: '
              f'{int(((refs < 1e-3) | (refs > 1 - 1e-3)).sum())}, '
              f'{len(inst)} detections, top score '
              f'{float(inst.scores.max()):.4f}')
    return dict(
        official=dict(
            repo='https://github.com/IDEA-Research/detrex',
            project='projects/focus_detr',
            commit=commits['detrex'],
            detectron2_commit=commits['detectron2']),
        hparams=dict(DETECTOR),
        spec=spec,
        aliases=aliases,
        variants=variants)


#: the released rows' architectures (detrex configs, full size)
FULL = dict(
    DETECTOR,
    feedforward_dim=2048,
    num_queries=900,
)


def make_full_specs(commits):
    """Key names and shapes (no values) of the full-size official models of
    the released rows: R-50, R-101 and Swin-T 4-scale."""
    from detectron2.modeling.backbone import SwinTransformer
    specs = OrderedDict()
    for name in ('r50', 'r101', 'swin-t'):
        if name == 'swin-t':
            swin = SwinTransformer(
                pretrain_img_size=224,
                embed_dim=96,
                depths=(2, 2, 6, 2),
                num_heads=(3, 6, 12, 24),
                drop_path_rate=0.1,
                window_size=7,
                out_indices=(1, 2, 3))
            model = build_official(
                FULL, (swin, ['p1', 'p2', 'p3'], [192, 384, 768]))
        else:
            model = build_official(dict(FULL, depth=int(name[1:])))
        specs[name] = OrderedDict(
            (k, tuple(v.shape)) for k, v in model.state_dict().items())
        print(f'{name}: {len(specs[name])} official keys')
    return dict(
        official=dict(
            repo='https://github.com/IDEA-Research/detrex',
            commit=commits['detrex'],
            detectron2_commit=commits['detectron2']),
        hparams=dict(FULL),
        specs=specs)


def make_swin(testing, commits):
    from detectron2.modeling.backbone import SwinTransformer
    h = SWIN
    model = SwinTransformer(
        pretrain_img_size=h['pretrain_img_size'],
        embed_dim=h['embed_dim'],
        depths=h['depths'],
        num_heads=h['num_heads'],
        window_size=h['window_size'],
        drop_path_rate=0.1,
        out_indices=h['out_indices'])
    model.eval()
    full = model.state_dict()
    buffers = OrderedDict((k, v.clone()) for k, v in full.items()
                          if k.endswith('relative_position_index'))
    spec = OrderedDict(
        (k, tuple(v.shape)) for k, v in full.items() if k not in buffers)
    state = testing.official_like_state(spec, h['seed'])
    model.load_state_dict({**state, **buffers}, strict=True)
    x = testing.random_input(h['input_shape'], h['input_seed'])
    with torch.no_grad():
        outs = model(x)
    print('swin outputs: ' + ', '.join(
        f'{k} {tuple(v.shape)}' for k, v in outs.items()))
    return dict(
        official=dict(
            repo='https://github.com/facebookresearch/detectron2',
            module='detectron2/modeling/backbone/swin.py (the SwinTransformer'
            ' detrex Focus-DETR Swin configs build)',
            commit=commits['detectron2'],
            detrex_commit=commits['detrex']),
        hparams=dict(SWIN),
        spec=spec,
        buffers=OrderedDict(
            (k, v.to(torch.int16)) for k, v in buffers.items()),
        outputs=OrderedDict((k, v.clone()) for k, v in outs.items()),
        state_sums=OrderedDict(
            (k, float(v.double().abs().sum())) for k, v in state.items()))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--detrex-root', required=True)
    parser.add_argument(
        '--detectron2-root',
        required=True,
        help='detectron2 source (detrex pins it as a submodule)')
    parser.add_argument('--site', help='extra site-packages directory')
    parser.add_argument(
        '--detrex-commit', help='commit of --detrex-root if not a git tree')
    parser.add_argument(
        '--detectron2-commit',
        help='commit of --detectron2-root if not a git tree')
    parser.add_argument(
        '--out', default=osp.join(HERE, 'focus_detr_detrex_fixture.pth'))
    parser.add_argument(
        '--swin-out', default=osp.join(HERE, 'detrex_swin_fixture.pth'))
    parser.add_argument(
        '--specs-out',
        default=osp.join(HERE, 'focus_detr_detrex_full_specs.pth'))
    args = parser.parse_args()
    paths = [args.detrex_root, args.detectron2_root]
    if args.site:
        paths.append(args.site)
    sys.path[:0] = paths
    sys.meta_path.insert(0, _StubFinder())
    torch.set_num_threads(1)
    testing = _load_testing()
    commits = dict(
        detrex=args.detrex_commit or _commit(args.detrex_root),
        detectron2=args.detectron2_commit or _commit(args.detectron2_root))
    torch.save(make_detector(testing, commits), args.out)
    print(f'wrote {args.out}')
    torch.save(make_swin(testing, commits), args.swin_out)
    print(f'wrote {args.swin_out}')
    torch.save(make_full_specs(commits), args.specs_out)
    print(f'wrote {args.specs_out}')


if __name__ == '__main__':
    main()
