"""Image demo: draw a detector's predictions on images (mmdet 3.3's
``demo/image_demo.py`` for this package's configs).

Example (the model of a config with its checkpoint, e.g. one converted from
the official weights by ``tools/model_converters/``)::

    python demo/image_demo.py IMG_OR_FOLDER \\
        configs/focus_detr/focus-detr-4scale_r50_8xb2-36e_coco.py \\
        --weights checkpoints/focus-detr_r50_36e.pth --out-dir outputs

writes ``outputs/vis/<image>`` (the picture) and ``outputs/preds/<image
name>.json`` (labels, scores, boxes in input pixels). The same arguments as
mmdet's demo where they apply (``--out-dir --device --pred-score-thr
--batch-size --show --no-save-vis --no-save-pred --print-result
--palette``). Differences: the config is required (no model names, nothing
is downloaded), ``--weights`` is required (``--random-weights`` runs the
untrained model, only to check a pipeline), the checkpoint is loaded without
executing any pickle and must fit the config's model, and class names come
from the checkpoint's ``meta.dataset_meta`` or else the config.
"""
import os.path as osp
import sys
from argparse import ArgumentParser
from typing import List, Optional, Tuple

# isort: off
sys.path.insert(0, osp.join(osp.dirname(osp.abspath(__file__)), '..'))
from efficient_detr_mm.visualization.detections import (  # noqa: E402
    EffDetInferencer)
# isort: on


def parse_args(argv: Optional[List[str]] = None) -> Tuple[dict, dict]:
    parser = ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('inputs', help='input image file or folder')
    parser.add_argument('config', help='config file of the model')
    parser.add_argument(
        '--weights', default=None, help='checkpoint file (required)')
    parser.add_argument(
        '--random-weights',
        action='store_true',
        help='run without --weights on the untrained model (checks the '
        'pipeline only; its detections mean nothing)')
    parser.add_argument(
        '--out-dir',
        default='outputs',
        help='output directory of images (vis/) and predictions (preds/)')
    parser.add_argument(
        '--device',
        default=None,
        help='device used for inference (default: cuda:0 if available, '
        'else cpu)')
    parser.add_argument(
        '--pred-score-thr',
        type=float,
        default=0.3,
        help='bbox score threshold for drawing')
    parser.add_argument(
        '--batch-size', type=int, default=1, help='inference batch size')
    parser.add_argument(
        '--show',
        action='store_true',
        help='display the image in a popup window')
    parser.add_argument(
        '--no-save-vis',
        action='store_true',
        help='do not save the pictures')
    parser.add_argument(
        '--no-save-pred',
        action='store_true',
        help='do not save the prediction JSON files')
    parser.add_argument(
        '--print-result',
        action='store_true',
        help='print the predictions')
    parser.add_argument(
        '--palette',
        default='none',
        choices=['coco', 'voc', 'citys', 'random', 'none'],
        help='colour palette (none: the config\'s, else the '
        'checkpoint\'s, else random)')
    call_args = vars(parser.parse_args(argv))

    if not osp.exists(call_args['inputs']):
        parser.error(f'input image or folder not found: '
                     f'{call_args["inputs"]}')
    if not osp.isfile(call_args['config']):
        parser.error(f'config file not found: {call_args["config"]}')
    if call_args['weights'] is None and not call_args['random_weights']:
        parser.error('a checkpoint is needed: --weights CKPT (nothing is '
                     'downloaded; official checkpoints are converted with '
                     'tools/model_converters/; --random-weights runs the '
                     'untrained model)')
    if call_args['weights'] is not None and not osp.isfile(
            call_args['weights']):
        parser.error(f'checkpoint file not found: {call_args["weights"]}')
    if call_args['no_save_vis'] and call_args['no_save_pred']:
        call_args['out_dir'] = ''
    init_args = dict(
        model=call_args.pop('config'),
        weights=call_args.pop('weights'),
        device=call_args.pop('device'),
        palette=call_args.pop('palette'),
        random_weights=call_args.pop('random_weights'))
    return init_args, call_args


def main(argv: Optional[List[str]] = None) -> dict:
    init_args, call_args = parse_args(argv)
    inferencer = EffDetInferencer(**init_args)
    results = inferencer(**call_args)
    if call_args['out_dir'] != '':
        print(f'results have been saved at {call_args["out_dir"]}')
    return results


if __name__ == '__main__':
    main()
