"""Token gather / scatter along the token axis, batched (no Python loop)."""
from torch import Tensor


def gather_tokens(x: Tensor, index: Tensor) -> Tensor:
    """Pick tokens ``index`` (bs, k) from ``x`` (bs, n, c) -> (bs, k, c).

    Also works for ``x`` of shape (bs, n) -> (bs, k)."""
    if x.dim() == 2:
        return x.gather(1, index)
    return x.gather(1, index.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def scatter_tokens(x: Tensor, index: Tensor, src: Tensor) -> Tensor:
    """Return a copy of ``x`` (bs, n, c) whose tokens ``index`` (bs, k) are
    replaced by ``src`` (bs, k, c); the other tokens are untouched
    (bit-identical)."""
    return x.scatter(1, index.unsqueeze(-1).expand(-1, -1, x.shape[-1]), src)
