"""The schedule of a training run within a wall-time budget: how many epochs of how many steps,
and after which epochs to validate, so that the whole schedule (a cosine decay to its end
included) and its last validation finish inside the budget, and validation takes a bounded share
of the time. Pure arithmetic on measured costs; :mod:`keras_unet.train` measures and applies it.

nnU-Net plans its schedule before training for the same reason: a schedule cut off by a time
limit never decays its learning rate, and a run that validates every epoch spends its budget on
validation (60% of a 30-minute CPU run on 531 nuclei images, before this).

Times are in seconds; epochs are counted from 1.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Default share of the wall time that validation may take.
VALIDATION_SHARE = 0.10
# A budget on a machine faster than planned is filled with more epochs, up to this many times the
# configured ones (a bound against a runaway plan on a very fast machine, not a measured optimum).
FILL_LIMIT = 4


@dataclass(frozen=True)
class Plan:
    """``epochs`` x ``steps_per_epoch`` training steps, validation after the epochs in
    ``validate_at`` (always the last), ``seconds`` the predicted wall time from the start of the
    run, ``reason`` one line for the user and the run record, ``fits`` False where an explicit
    schedule cannot finish inside the budget."""

    epochs: int
    steps_per_epoch: int
    validate_at: tuple
    seconds: float
    reason: str
    fits: bool = True

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch


def validation_epochs(epochs: int, count: int, done: tuple = ()) -> tuple:
    """``count`` epochs (at least 1, at most ``epochs``) spread evenly over ``1..epochs``, the last
    always among them, together with the epochs in ``done`` (validated already)."""
    count = int(np.clip(count, 1, epochs))
    spread = np.linspace(epochs / count, epochs, count).round().astype(int)
    return tuple(sorted(set(int(e) for e in spread) | {int(e) for e in done if e <= epochs}))


def plan_schedule(*, epochs: int, steps_per_epoch: int, step_seconds: float, validation_seconds: float,
                  budget_seconds: float = 0.0, elapsed_seconds: float = 0.0, reserve_seconds: float = 0.0,
                  epochs_done: int = 0, validated: tuple = (), fixed: bool = False,
                  validation_share: float = VALIDATION_SHARE, epoch_overhead_seconds: float = 0.0,
                  fill_limit: int | None = None) -> Plan:
    """Plan the rest of a run from measured costs, after ``epochs_done`` epochs.

    ``epochs`` x ``steps_per_epoch``: the configured schedule, kept as it is where ``fixed``
    (given explicitly by the user; ``fits`` False where it cannot finish). Otherwise a budget is
    filled: the run gets as many whole epochs as finish inside it, fewer than configured on a slow
    machine, more on a fast one (up to ``fill_limit`` times ``epochs``, default :data:`FILL_LIMIT`). Epochs keep their length
    (Keras fixes it when training starts). ``step_seconds``, ``validation_seconds``: measured costs of one training step
    and one validation. ``budget_seconds``: the wall-time budget (0: none), of which
    ``elapsed_seconds`` are spent (data, graph building, the epochs done, the ``validated`` ones)
    and ``reserve_seconds`` are kept for the work after training (choosing the post-processing).
    ``epoch_overhead_seconds``: what an epoch costs beside its steps and validation (checkpoints,
    logs). Validation gets at most ``validation_share`` of the wall time, the last epoch's included.
    """
    step_seconds, validation_seconds = max(step_seconds, 1e-6), max(validation_seconds, 1e-6)
    fill_limit = FILL_LIMIT if fill_limit is None else fill_limit
    epoch_seconds = steps_per_epoch * step_seconds + max(epoch_overhead_seconds, 0.0)
    if budget_seconds and not fixed:
        # As many validations as the share allows (the last one always), the rest is training.
        count = max(1, int(validation_share * budget_seconds / validation_seconds) - len(validated))
        left = budget_seconds - elapsed_seconds - reserve_seconds - count * validation_seconds
        fitting = epochs_done + int(max(left, 0.0) / epoch_seconds)
        plan_epochs = min(epochs * max(fill_limit, 1), max(fitting, epochs_done + 1))
        if plan_epochs < epochs:
            reason = (f"{epochs} epochs of {steps_per_epoch} steps do not fit the {budget_seconds / 60:g} min budget "
                      f"at {step_seconds:.2f} s per step: {plan_epochs} epochs, the schedule ending inside it")
        elif plan_epochs > epochs:
            reason = (f"the {budget_seconds / 60:g} min budget holds more than the configured {epochs} epochs of "
                      f"{steps_per_epoch} steps at {step_seconds:.2f} s per step: {plan_epochs} epochs fill it"
                      + (f" (at most {fill_limit}x the configured epochs)" if plan_epochs == epochs * fill_limit
                         else ""))
        elif fitting > epochs:  # room left, but no more than the fill limit allows
            reason = (f"the configured schedule fits the budget with room for {fitting} epochs (at most "
                      f"{fill_limit}x the configured epochs)")
        else:
            reason = "the configured schedule fills the budget"
    else:
        plan_epochs = epochs
        training = (epochs - epochs_done) * epoch_seconds
        count = int(validation_share * (elapsed_seconds + training) / (validation_seconds * (1 - validation_share)))
        reason = "the configured schedule" + ("" if budget_seconds else " (no time limit)")
    validate_at = validation_epochs(plan_epochs, count - len(validated) if not budget_seconds or fixed else count,
                                    validated)
    new = len([e for e in validate_at if e not in validated])
    seconds = (elapsed_seconds + (plan_epochs - epochs_done) * epoch_seconds + new * validation_seconds
               + reserve_seconds)
    fits = not budget_seconds or seconds <= budget_seconds * 1.02
    if not fits:
        reason = (f"the configured {epochs} x {steps_per_epoch} steps need about {seconds / 60:.1f} min at "
                  f"{step_seconds:.2f} s per step, over the {budget_seconds / 60:g} min budget: the time limit "
                  f"stops the run before its schedule ends")
    return Plan(plan_epochs, steps_per_epoch, validate_at, seconds, reason, fits)


def cosine_rate(step: int, total_steps: int, base_rate: float) -> float:
    """Cosine decay from ``base_rate`` at step 0 to 0 at ``total_steps`` (Keras' ``CosineDecay``
    with alpha 0), held at 0 beyond."""
    progress = min(max(step, 0) / max(total_steps, 1), 1.0)
    return 0.5 * base_rate * (1.0 + np.cos(np.pi * progress))
