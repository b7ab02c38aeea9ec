"""The learning-rate schedules of the training loop, by name: multipliers of the stage's learning
rate as a function of the optimiser step (for `torch.optim.lr_scheduler.LambdaLR`).

A method may bring its own (`Method.lr_factor`, e.g. a step decay); otherwise the loop uses the one
named by `--schedule` or the method's default.
"""

from __future__ import annotations

import math


def cosine(total: int, warmup: int = 0):
    """Cosine decay from the peak to zero over `total` steps, after an optional linear warm-up."""
    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return 0.5 * (1 + math.cos(math.pi * progress))
    return factor


def one_cycle(total: int, warm_fraction: float = 0.3, start: float = 1 / 25, end: float = 1 / 25e4):
    """The one-cycle policy (Smith & Topin 2018, as torch's OneCycleLR with cosine annealing): the
    learning rate rises from `start` × its peak to the peak over the first `warm_fraction` of the
    steps, then falls to `end` × the peak."""
    warm = max(1, int(round(total * warm_fraction)))

    def factor(step: int) -> float:
        if step < warm:
            return start + (1 - start) * (1 - math.cos(math.pi * step / warm)) / 2
        progress = min(1.0, (step - warm) / max(1, total - warm))
        return end + (1 - end) * (1 + math.cos(math.pi * progress)) / 2
    return factor


SCHEDULES = {"cosine": cosine, "onecycle": one_cycle}  # the one list of schedule names
