"""The schedule planner and the post-processing search, against numbers worked out by hand."""
import numpy as np
import pytest

from keras_unet import budget, postprocess, synthetic, weights


def test_a_budget_shortens_the_run_by_whole_epochs():
    # 30 min budget, 80 s spent (the first epoch and its validation), 30 s reserved; 50 steps of
    # 1.15 s + 2 s overhead = 59.5 s an epoch; a validation 10 s, so 0.1 * 1800 / 10 = 18 may run,
    # 17 more after the first: 1800 - 80 - 30 - 170 = 1520 s -> 25 more epochs -> 26 in all.
    plan = budget.plan_schedule(epochs=50, steps_per_epoch=50, step_seconds=1.15, validation_seconds=10.0,
                                budget_seconds=1800, elapsed_seconds=80, reserve_seconds=30, epochs_done=1,
                                validated=(1,), epoch_overhead_seconds=2.0)
    assert (plan.epochs, plan.steps_per_epoch, plan.fits) == (26, 50, True)
    assert plan.validate_at[0] == 1 and plan.validate_at[-1] == 26 and len(plan.validate_at) <= 18
    assert plan.seconds == pytest.approx(80 + 25 * 59.5 + (len(plan.validate_at) - 1) * 10 + 30)
    assert plan.seconds <= 1800


def test_a_schedule_that_fits_is_kept_and_validation_keeps_its_share():
    # 30 x 20 steps of 0.1 s = 60 s of training; validation 3 s: 10% of the wall time allows
    # 0.1 * (5 + 58) / (3 * 0.9) = 2.3 -> 2 validations, the first done already, the last kept.
    plan = budget.plan_schedule(epochs=30, steps_per_epoch=20, step_seconds=0.1, validation_seconds=3.0,
                                budget_seconds=0, elapsed_seconds=5, epochs_done=1, validated=(1,))
    assert plan.epochs == 30 and plan.validate_at == (1, 30) and plan.fits
    # the same schedule with a 150 s budget is filled (issue: a budget is a budget): 0.1 * 150 / 3 = 5
    # validations, 4 more; 150 - 5 - 4 * 3 = 133 s of 2 s epochs -> 66 more -> 67 in all
    with_budget = budget.plan_schedule(epochs=30, steps_per_epoch=20, step_seconds=0.1, validation_seconds=3.0,
                                       budget_seconds=150, elapsed_seconds=5, epochs_done=1, validated=(1,))
    assert with_budget.epochs == 67 and with_budget.fits and with_budget.seconds <= 150
    assert "the 2.5 min budget holds more than the configured 30 epochs" in with_budget.reason
    capped = budget.plan_schedule(epochs=30, steps_per_epoch=20, step_seconds=0.1, validation_seconds=3.0,
                                  budget_seconds=150, elapsed_seconds=5, epochs_done=1, validated=(1,), fill_limit=2)
    assert capped.epochs == 60 and "at most 2x" in capped.reason
    exact = budget.plan_schedule(epochs=67, steps_per_epoch=20, step_seconds=0.1, validation_seconds=3.0,
                                 budget_seconds=150, elapsed_seconds=5, epochs_done=1, validated=(1,))
    assert exact.epochs == 67 and exact.reason == "the configured schedule fills the budget"


def test_an_explicit_schedule_is_kept_with_a_warning_when_it_cannot_fit():
    plan = budget.plan_schedule(epochs=30, steps_per_epoch=20, step_seconds=0.5, validation_seconds=3.0,
                                budget_seconds=150, elapsed_seconds=15, epochs_done=1, validated=(1,), fixed=True)
    assert plan.epochs == 30 and not plan.fits and "over the 2.5 min budget" in plan.reason


def test_validation_epochs_are_spread_with_the_last():
    assert budget.validation_epochs(10, 2) == (5, 10)
    assert budget.validation_epochs(10, 3, done=(1,)) == (1, 3, 7, 10)
    assert budget.validation_epochs(4, 99) == (1, 2, 3, 4)


def test_cosine_rate_by_hand():
    assert budget.cosine_rate(0, 100, 1e-3) == pytest.approx(1e-3)
    assert budget.cosine_rate(50, 100, 1e-3) == pytest.approx(5e-4)
    assert budget.cosine_rate(100, 100, 1e-3) == pytest.approx(0.0, abs=1e-12)
    assert budget.cosine_rate(150, 100, 1e-3) == pytest.approx(0.0, abs=1e-12)


def _fat_probabilities(truth: np.ndarray, fat: float) -> np.ndarray:
    """Probabilities as a class-balanced network gives them: high inside the objects, a halo of
    ``fat`` around them (so argmax makes fat, merged objects), low elsewhere, borders cut."""
    from scipy import ndimage

    inside = weights.binary_target(truth).astype(np.float32)
    halo = ndimage.binary_dilation(truth > 0, iterations=2) & (inside == 0)
    p = np.where(inside > 0, 0.95, np.where(halo, fat, 0.05)).astype(np.float32)
    return np.stack([1 - p, p], -1)


def test_the_search_finds_the_threshold_that_removes_a_halo():
    """Objects with a 0.6 halo: argmax merges touching cells and fattens the rest; any threshold
    above 0.6 gives back the objects (DSB score 1 with the separation borders given back)."""
    truths = [synthetic.sample((128, 128), seed=s)[1] for s in range(2)]
    probabilities = [_fat_probabilities(t, 0.6) for t in truths]
    chosen = postprocess.choose(probabilities, truths, typical_min_size=10, splits=("none",))
    assert chosen["threshold"] is not None and chosen["threshold"] > 0.6
    assert chosen["value"] > chosen["default_value"] + 0.2 and chosen["value"] > 0.9
    assert chosen["score"] == "dsb_score" and chosen["images"] == 2
    # the chosen settings, scored again from scratch: what was recorded is what they give
    assert postprocess.score(probabilities, truths, chosen) == pytest.approx(chosen["value"])


def test_min_size_candidates():
    assert postprocess.min_size_candidates(10) == [0, 5, 10, 20, 40]
    assert postprocess.min_size_candidates(0) == [0]
