"""How many patches one pass over the training cases draws, so that every batch is full.

``DataLoader(shuffle=True)`` draws each case once per pass: with fewer cases than ``batch_size`` (one volume, as in
the semi-automated mode and every one-patient recipe) every batch held one patch whatever the plan said, and with
``N % batch_size`` cases left over the last batch of each pass was short. nnU-Net draws ``batch_size`` cases per
step with replacement; here the pass is lengthened to whole batches instead (torch's ``RandomSampler`` with
``num_samples`` above the case count starts a new permutation), so a data set whose size is a multiple of the
batch size is sampled exactly as before (the headline run is unchanged).
"""

from __future__ import annotations

__all__ = ["full_batches"]


def full_batches(num_cases: int, batch_size: int) -> int:
    """The number of samples per pass over ``num_cases`` training cases that fills every batch of ``batch_size``:
    ``num_cases`` rounded up to a multiple of ``batch_size`` (the sampler's ``num_samples``).

    Raises:
        ValueError: no training case, or a batch size below 1.
    """
    if num_cases < 1:
        raise ValueError("the training split has no cases: the datalist's 'training' list is empty.")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
    return -(-num_cases // batch_size) * batch_size
