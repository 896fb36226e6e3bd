"""Pictures of the tokens Focus-DETR's Foreground Token Selector keeps
(per feature level, as Fig. 7 of the paper)."""
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from torch import Tensor


def token_layer_counts(selection: Dict, num_tokens: int) -> Tensor:
    """How many encoder layers update each token.

    Args:
        selection (dict): output of ``ForegroundTokenSelector.select``.
        num_tokens (int): N.

    Returns:
        Tensor: (bs, N) long; 0 = never updated (kept as the backbone
        feature), ``num_layers`` = refined by every layer.
    """
    index = selection['indices']
    counts = index.new_zeros(index.shape[0], num_tokens)
    for k, upd in zip(selection['sizes'], selection['updates']):
        counts.scatter_add_(1, index[:, :k], upd.long())
    return counts


def split_levels(values: Tensor, spatial_shapes: Tensor) -> List[np.ndarray]:
    """Cut a flattened (N,) token vector into per-level (H_l, W_l) maps."""
    shapes = [(int(h), int(w)) for h, w in spatial_shapes.tolist()]
    parts = values.detach().cpu().split([h * w for h, w in shapes])
    return [p.reshape(h, w).numpy() for p, (h, w) in zip(parts, shapes)]


@torch.no_grad()
def focus_token_maps(model: torch.nn.Module, inputs: Tensor,
                     data_samples: list) -> Dict:
    """Run a FocusDETR up to its token selection.

    Args:
        model: a built ``FocusDETR`` (eval mode).
        inputs (Tensor): (bs, 3, H, W) preprocessed images.
        data_samples (list): their ``DetDataSample``s.

    Returns:
        dict: ``counts`` list (per image) of per-level (H_l, W_l) maps of
        the number of layers updating each token, ``scores`` the same for
        the sigmoid foreground scores, ``num_layers``, ``spatial_shapes``.
    """
    feats = model.extract_feat(inputs)
    enc_in, _ = model.pre_transformer(feats, data_samples)
    fts = model.select_tokens(enc_in['feat'], enc_in['feat_mask'],
                              enc_in['feat_pos'], enc_in['spatial_shapes'])
    shapes = enc_in['spatial_shapes']
    counts = token_layer_counts(fts['fts_selection'], enc_in['feat'].shape[1])
    scores = fts['fts_logits'].float().sigmoid()
    return dict(
        counts=[split_levels(c, shapes) for c in counts],
        scores=[split_levels(s, shapes) for s in scores],
        num_layers=len(fts['fts_selection']['sizes']),
        spatial_shapes=shapes)


def draw_focus_tokens(image: np.ndarray,
                      level_counts: Sequence[np.ndarray],
                      num_layers: int,
                      out_file: str,
                      pad_shape: Optional[Sequence[int]] = None,
                      strides: Optional[Sequence[int]] = None,
                      title: str = 'Focus-DETR foreground tokens') -> None:
    """Save a figure: the image, then per level the image overlaid with the
    number of encoder layers that update each token (0 = not selected).

    Args:
        image (np.ndarray): (h, w, 3) uint8 RGB network-input image (before
            padding).
        level_counts (Sequence[np.ndarray]): per level (H_l, W_l) maps.
        num_layers (int): number of encoder layers (colour scale maximum).
        out_file (str): PNG path.
        pad_shape (Sequence[int], optional): (H, W) of the padded batch the
            token grids cover. Defaults to the image size.
        strides (Sequence[int], optional): level strides for the titles.
        title (str): figure title.
    """
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    h, w = image.shape[:2]
    ph, pw = pad_shape if pad_shape is not None else (h, w)
    n = len(level_counts)
    fig, axes = plt.subplots(1, n + 1, figsize=(3.2 * (n + 1), 3.4))
    axes[0].imshow(image)
    axes[0].set_title('input')
    cmap = plt.get_cmap('viridis', num_layers + 1)
    im = None
    for lvl, (ax, cnt) in enumerate(zip(axes[1:], level_counts)):
        ax.imshow(image)
        masked = np.ma.masked_where(cnt == 0, cnt)
        im = ax.imshow(
            masked,
            cmap=cmap,
            vmin=-0.5,
            vmax=num_layers + 0.5,
            alpha=0.7,
            extent=(0, pw, ph, 0),
            interpolation='nearest')
        ax.set_xlim(0, w)
        ax.set_ylim(h, 0)
        kept = int((cnt > 0).sum())
        name = f'level {lvl}'
        if strides is not None:
            name += f' (stride {strides[lvl]})'
        ax.set_title(f'{name}\n{kept}/{cnt.size} tokens kept', fontsize=9)
    for ax in axes:
        ax.axis('off')
    if im is not None:
        bar = fig.colorbar(im, ax=list(axes), fraction=0.02, pad=0.01)
        bar.set_label('encoder layers updating the token')
        bar.set_ticks(list(range(num_layers + 1)))
    fig.suptitle(title)
    fig.savefig(out_file, dpi=100, bbox_inches='tight')
    plt.close(fig)
