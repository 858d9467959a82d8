"""Learning-rate reduction on plateau and early stopping, evaluated on the host after each eval.

`optax.contrib.reduce_on_plateau` is close to torch's `ReduceLROnPlateau` but not equal:
  * optax reduces when the count of non-improving evaluations *reaches* `patience`; torch reduces
    when it *exceeds* `patience` (patience 5 -> torch halves on the 6th bad evaluation, which is
    what `plateau_scheduler.npz` records);
  * optax is a gradient transformation that needs the metric at every `update` call; our metric
    only exists every `eval_every` steps.
So we keep torch's rule here as a tiny pure function over a JSON-able state (checkpointed with
the run), and feed `lr / base_lr` to the jitted step (see `state.scale_by_lr_scale`).
"""

from __future__ import annotations

import dataclasses

TORCH_LR_EPS = 1e-8  # torch skips a reduction smaller than this


@dataclasses.dataclass(frozen=True)
class PlateauState:
    lr: float
    best: float = float("inf")
    num_bad: int = 0
    cooldown_left: int = 0

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> PlateauState:
        return cls(**data)


def plateau_step(
    state: PlateauState,
    value: float,
    *,
    factor: float,
    patience: int,
    threshold: float = 1e-4,
    cooldown: int = 0,
    min_lr: float = 0.0,
) -> PlateauState:
    """torch `ReduceLROnPlateau.step(value)` with mode='min', threshold_mode='rel'."""
    value = float(value)
    best, num_bad = state.best, state.num_bad
    if value < best * (1.0 - threshold):
        best, num_bad = value, 0
    else:
        num_bad += 1
    cooldown_left = state.cooldown_left
    if cooldown_left > 0:
        cooldown_left -= 1
        num_bad = 0
    lr = state.lr
    if num_bad > patience:
        new_lr = max(lr * factor, min_lr)
        if lr - new_lr > TORCH_LR_EPS:
            lr = new_lr
        cooldown_left, num_bad = cooldown, 0
    return PlateauState(lr=lr, best=best, num_bad=num_bad, cooldown_left=cooldown_left)


@dataclasses.dataclass(frozen=True)
class EarlyStopState:
    best: float = float("inf")
    best_step: int = -1
    num_bad: int = 0


def early_stop_step(state: EarlyStopState, value: float, step: int) -> EarlyStopState:
    """Track the best (lowest) validation value; `num_bad` counts evaluations since it."""
    if value < state.best:
        return EarlyStopState(best=float(value), best_step=int(step), num_bad=0)
    return dataclasses.replace(state, num_bad=state.num_bad + 1)


def should_stop(state: EarlyStopState, patience: int) -> bool:
    """Stop once `patience` evaluations in a row did not improve (patience <= 0: never)."""
    return patience > 0 and state.num_bad >= patience
