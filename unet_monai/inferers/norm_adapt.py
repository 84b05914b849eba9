"""Test-time BatchNorm adaptation (AdaBN; Li et al., "Revisiting Batch Normalization for Practical Domain
Adaptation", 2016): before an image is predicted, the BatchNorm layers' statistics are measured on that image.

A network trained on one patient's scan keeps, in each BatchNorm layer, running means and variances of that
scan's features. Another patient, scanner or contrast phase shifts those features, and eval mode normalises them
with the wrong statistics. Here a first pass over the image's own tiles, in train mode without gradients, gathers
each layer's mean and variance (an equal-weight average over the tiles: ``momentum=None``); the prediction
then runs in eval mode with them, and the trained statistics are put back for the next image. No label is read.
MONAI has no such inferer; it wraps any of theirs or ours. torch's ``swa_utils.update_bn`` does the same reset
and averaging over a data loader, but cannot drive an inferer's tiles and keeps the new statistics for good.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from monai.inferers import Inferer, SimpleInferer
from torch import nn

__all__ = ["BatchNormAdaptInferer", "batch_norms"]


def batch_norms(network: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The BatchNorm layers of ``network`` that keep running statistics (the ones eval mode reads)."""
    return [m for m in network.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


class _OneByOne(nn.Module):
    """Runs ``module`` on one image of the batch at a time, so that train-mode BatchNorm normalises each tile by its
    own statistics: the measured averages then do not depend on how the inferer groups tiles into batches (the
    order of a memory-mapped volume's tiles differs from the in-RAM one's). ``.module`` lets the overlap-tile
    inferer reach the network's shape arithmetic, as through ``DistributedDataParallel``."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        return torch.cat([self.module(x[i : i + 1], *args, **kwargs) for i in range(x.shape[0])])


class BatchNormAdaptInferer(Inferer):
    """Predict each input with BatchNorm statistics measured on that input, ``(B, C, *S) -> inferer's output``.

    One call: (1) every BatchNorm layer's running statistics are reset and ``stats_inferer`` runs over ``inputs``
    with the network in train mode and no autograd, one tile per forward pass, so that each layer averages the mean
    and variance of every tile with equal weight; (2) ``inferer`` predicts ``inputs`` in the network's own mode
    with those statistics; (3) the network's statistics, momenta and train/eval modes are restored, whatever
    happened. The ``B`` images of one call share the statistics (inference.json loads one image per call). It
    costs one more pass of ``stats_inferer``.

    Args:
        inferer: the inferer that predicts (e.g. an ``OverlapTileInferer`` or a ``FlipEnsembleInferer`` around it).
        stats_inferer: the pass that gathers the statistics (default: ``inferer``). Give the plain tile inferer when
            ``inferer`` is a flip ensemble: one pass over the tiles measures the same statistics in 1 / (number of
            flips) of the time.
        prior: the weight of the trained statistics in the ones used, ``prior * trained + (1 - prior) * measured``
            for each layer's mean and variance (Schneider et al., "Improving robustness against common corruptions
            by covariate shift adaptation", 2020); 0 (default) uses the measured statistics alone.

    Raises:
        ValueError: ``prior`` outside [0, 1).
        ValueError (on call): the network has no BatchNorm with running statistics (no norm or InstanceNorm,
            which already normalise each patch with its own statistics).
    """

    def __init__(
        self, inferer: Inferer | None = None, stats_inferer: Inferer | None = None, prior: float = 0.0
    ) -> None:
        super().__init__()
        if not 0.0 <= prior < 1.0:
            raise ValueError(f"prior (--adapt_norm_prior) is the trained statistics' weight, in [0, 1); got {prior}.")
        self.inferer = inferer if inferer is not None else SimpleInferer()
        self.stats_inferer = stats_inferer if stats_inferer is not None else self.inferer
        self.prior = prior

    def __call__(self, inputs: torch.Tensor, network: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if not isinstance(network, nn.Module):
            raise TypeError(f"BatchNormAdaptInferer needs an nn.Module network, got {type(network).__name__}.")
        norms = batch_norms(network)
        if not norms:
            raise ValueError(
                f"test-time BatchNorm adaptation (--adapt_norm True) needs a network with BatchNorm layers; this "
                f"{type(network).__name__} has none (planned with --norm instance, or trained without a norm): "
                "drop --adapt_norm."
            )
        modes = [(module, module.training) for module in network.modules()]
        saved = [(m, m.momentum, {k: v.clone() for k, v in m.named_buffers(recurse=False)}) for m in norms]
        try:
            for m in norms:
                m.reset_running_stats()
                m.momentum = None  # an equal-weight average over the tiles
            # train mode as in training, where the statistics were gathered (dropout included), but no autograd
            network.train()
            with torch.no_grad():
                self.stats_inferer(inputs, _OneByOne(network), *args, **kwargs)
                for m, _, buffers in saved:
                    for name in ("running_mean", "running_var"):
                        getattr(m, name).lerp_(buffers[name], self.prior)
            for module, training in modes:
                module.train(training)
            return self.inferer(inputs, network, *args, **kwargs)
        finally:
            for module, training in modes:
                module.train(training)
            with torch.no_grad():
                for m, momentum, buffers in saved:
                    m.momentum = momentum
                    for name, value in buffers.items():
                        getattr(m, name).copy_(value)
