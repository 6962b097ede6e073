"""Tests for the stream protocol and the detection report."""

import numpy as np
import pytest
from numpy.testing import assert_array_equal

from dsc_sklearn import DiscrepancyAwareOnlineClassifier
from dsc_sklearn.evaluation.datasets import load_stream_dataset
from dsc_sklearn.evaluation.protocol import (
    apply_drift,
    detection_report,
    run_drift_protocol,
    run_stream_protocol,
)


def plain(**params):
    params = {"correction": "none", "step_guard": None, **params}
    return DiscrepancyAwareOnlineClassifier(
        hidden_layer_sizes=(128, 128), input_bounds=(0.0, 1.0), **params)


@pytest.fixture(scope="module")
def digits():
    return {seed: load_stream_dataset("digits", random_state=seed) for seed in range(3)}


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_accumulative_attack_breaks_plain_training_but_noise_does_not(digits, seed):
    attacked = run_stream_protocol(plain(), digits[seed], attack="accumulative",
                                   random_state=seed)
    noisy = run_stream_protocol(plain(), digits[seed], attack="noise", random_state=seed)
    assert attacked.accuracy_burn_in - attacked.accuracy_trigger >= 0.15
    assert noisy.accuracy_trigger >= noisy.accuracy_burn_in - 0.03
    assert noisy.n_accumulative_steps == 40  # noise never trips the stealth stop
    assert not noisy.stealth_stop
    assert attacked.stealth_stop == (attacked.n_accumulative_steps < 40)


def test_protocol_is_deterministic_per_seed(digits):
    kwargs = dict(attack="accumulative", max_steps=5, burn_in_epochs=2, random_state=7)
    first = run_stream_protocol(plain(), digits[0], **kwargs)
    second = run_stream_protocol(plain(), digits[0], **kwargs)
    for key in ("accuracy_burn_in", "accuracy_trigger", "accuracy_clean",
                "n_accumulative_steps", "auc_discrepancy_sample", "auc_loss_batch"):
        assert first[key] == second[key], key
    assert_array_equal(first.accuracy_curve, second.accuracy_curve)
    assert_array_equal(first.discrepancy_poison, second.discrepancy_poison)


def test_result_fields_and_ranges(digits):
    result = run_stream_protocol(
        DiscrepancyAwareOnlineClassifier(hidden_layer_sizes=(32,), input_bounds=(0.0, 1.0),
                                         correction="dsc", threshold=0.0),
        digits[0], attack="accumulative", max_steps=3, burn_in_epochs=1,
        defence_warmup=1, stealth_slack=None, random_state=0)
    assert result.n_accumulative_steps == 3
    assert len(result.accuracy_curve) == 4  # every online batch, then the trigger
    for key in ("accuracy_burn_in", "accuracy_accumulative", "accuracy_trigger",
                "accuracy_clean", "flagged_fraction_clean", "flagged_fraction_poison",
                "auc_discrepancy_sample", "auc_discrepancy_batch", "auc_loss_sample",
                "auc_loss_batch"):
        assert 0.0 <= result[key] <= 1.0, key
    assert result.flagged_fraction_poison > 0  # threshold 0 flags changed predictions
    # Threshold 0 flags most rows of every batch: the first poisoned batch raises an alarm.
    assert result.alarm_delay == 0.0
    assert 0.0 <= result.alarm_rate_clean <= 1.0
    assert not result.stealth_stop  # stealth_slack=None
    assert result.detection["true_positive"]["denominator"] == 300
    assert len(result.discrepancy_poison) == 300
    assert result.wall_time > 0


def test_trigger_only_and_clean_runs_have_no_poison(digits):
    result = run_stream_protocol(plain(), digits[0], attack="trigger_only", max_steps=3,
                                 burn_in_epochs=1, defence_warmup=1, random_state=0)
    assert np.isnan(result.auc_discrepancy_sample)
    assert np.isnan(result.flagged_fraction_poison)
    # No guard and no gate: nothing can raise an alarm.
    assert np.isnan(result.alarm_delay) and result.alarm_rate_clean == 0.0
    clean = run_stream_protocol(plain(), digits[0], attack="none", max_steps=3,
                                burn_in_epochs=1, defence_warmup=1, random_state=0)
    assert clean.accuracy_trigger == pytest.approx(clean.accuracy_clean)


def test_seen_stream_and_fixed_trigger_run(digits):
    result = run_stream_protocol(plain(), digits[0], stream="seen", trigger="fixed",
                                 validation="test", max_steps=2, burn_in_epochs=1,
                                 defence_warmup=1, random_state=0)
    assert result.n_accumulative_steps <= 2


@pytest.mark.parametrize("kwargs, message", [
    ({"attack": "laser"}, "attack must be one of"),
    ({"stream": "old"}, "stream must be"),
    ({"validation": "train"}, "validation must be"),
    ({"trigger": "later"}, "trigger must be"),
])
def test_protocol_argument_errors(digits, kwargs, message):
    with pytest.raises(ValueError, match=message):
        run_stream_protocol(plain(), digits[0], max_steps=1, burn_in_epochs=1,
                            defence_warmup=0, **kwargs)


def test_detection_report_counts_and_rates():
    report = detection_report([True, True, True, False, False], [True, False, True, True, False])
    assert report["true_positive"] == {"rate": 2 / 3, "numerator": 2, "denominator": 3}
    assert report["false_positive"] == {"rate": 0.5, "numerator": 1, "denominator": 2}
    assert report["true_negative"]["numerator"] == 1
    assert report["false_negative"]["numerator"] == 1
    assert report["precision"] == pytest.approx(2 / 3)
    assert report["f1"] == pytest.approx(2 / 3)


def test_detection_report_without_poison_has_nan_rates():
    report = detection_report([False, False], [False, True])
    assert np.isnan(report["true_positive"]["rate"])
    assert report["false_positive"]["rate"] == 0.5


def test_detection_report_shape_mismatch():
    with pytest.raises(ValueError, match="one value per sample"):
        detection_report([True], [True, False])


@pytest.mark.parametrize("kind", ["noise", "brightness", "translation"])
def test_apply_drift_kinds(kind):
    X = np.random.default_rng(0).uniform(size=(5, 64)).astype(np.float32)
    assert apply_drift(X, kind, 0.0, image_shape=(1, 8, 8)).tolist() == X.tolist()
    moved = apply_drift(X, kind, 1.0, image_shape=(1, 8, 8), input_bounds=(0.0, 1.0),
                        random_state=0)
    assert moved.dtype == np.float32 and moved.min() >= 0.0 and moved.max() <= 1.0
    assert not np.allclose(moved, X)


def test_translation_moves_along_the_last_image_axis():
    image = np.arange(16, dtype=np.float32).reshape(1, 16)
    moved = apply_drift(image, "translation", 1, image_shape=(1, 4, 4)).reshape(4, 4)
    assert moved[:, 0].tolist() == [0, 0, 0, 0]
    assert moved[:, 1].tolist() == [0, 4, 8, 12]


def test_apply_drift_unknown_kind():
    with pytest.raises(ValueError, match="kind must be one of"):
        apply_drift(np.zeros((1, 2)), "rotation", 1.0)


def test_drift_protocol_plain_training_has_no_gap(digits):
    result = run_drift_protocol(plain(), digits[0], kind="noise", n_steps=3,
                                burn_in_epochs=1, defence_warmup=1, random_state=0)
    assert result.accuracy_gap == 0.0
    assert result.flagged_fraction_drift == 0.0
    gated = run_drift_protocol(plain(correction="dsc", threshold=0.0), digits[0],
                               kind="noise", n_steps=3, burn_in_epochs=1,
                               defence_warmup=1, random_state=0)
    assert gated.flagged_fraction_drift > 0
    assert gated.accuracy_plain == result.accuracy_plain  # same twin, same stream


def test_learning_from_scratch_compares_with_the_same_model_undefended():
    from dsc_sklearn.defence.guards import StepGuard
    from dsc_sklearn.evaluation.protocol import run_learning_protocol

    data = load_stream_dataset("digits", random_state=0)
    plain = run_learning_protocol(DiscrepancyAwareOnlineClassifier(step_guard=None), data,
                                  n_passes=2, random_state=0)
    assert plain.learning_cost == 0.0  # the same weights, batches and order
    assert np.isnan(plain.scaled_fraction_learning)
    throttled = run_learning_protocol(
        DiscrepancyAwareOnlineClassifier(step_guard=StepGuard(margin=1e-6, warmup=1,
                                                              rule="bound")),
        data, n_passes=2, random_state=0)
    assert throttled.accuracy_plain == plain.accuracy_plain
    assert throttled.scaled_fraction_learning > 0.5
    assert throttled.learning_cost > 0.05
    assert throttled.n_steps == 2 * -(-len(data.X_train) // 100)
