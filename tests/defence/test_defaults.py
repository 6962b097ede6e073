"""Pin the measured behaviour behind the chosen defaults (docs/results.md, docs/ablations.md)."""

import pytest

from dsc_sklearn import DiscrepancyAwareOnlineClassifier
from dsc_sklearn.evaluation.datasets import load_stream_dataset
from dsc_sklearn.evaluation.protocol import run_drift_protocol, run_stream_protocol
from dsc_sklearn.defence.thresholds import AutoThreshold

SEEDS = [0, 1, 2]


def digits_mlp(**params):
    return DiscrepancyAwareOnlineClassifier(hidden_layer_sizes=(128, 128),
                                            input_bounds=(0.0, 1.0), **params)


@pytest.mark.slow
@pytest.mark.parametrize("seed", SEEDS)
def test_default_is_nearly_free_on_a_clean_stream(seed):
    # A drift of strength 0 is a clean stream with a plain-training twin.
    result = run_drift_protocol(digits_mlp(), load_stream_dataset("digits", random_state=seed),
                                kind="noise", strength=0.0, random_state=seed)
    assert result.accuracy_gap <= 0.005
    assert result.flagged_fraction_drift <= 0.02


@pytest.mark.slow
@pytest.mark.parametrize("seed", SEEDS)
def test_default_step_guard_holds_the_attack_at_no_clean_cost(seed):
    data = load_stream_dataset("digits", random_state=seed)
    default = run_stream_protocol(digits_mlp(), data, random_state=seed)
    plain = run_stream_protocol(digits_mlp(correction="none", step_guard=None), data,
                                random_state=seed)
    assert default.accuracy_trigger >= 0.85
    assert plain.accuracy_trigger < 0.80  # the attack bites without the guard
    assert default.accuracy_clean >= plain.accuracy_clean - 0.01


@pytest.mark.slow
@pytest.mark.parametrize("seed", SEEDS)
def test_loss_gated_batch_drop_stops_the_attack_on_digits(seed):
    # The "batch-drop +loss excl" variant of benchmarks/ablations.py.
    defence = digits_mlp(granularity="batch", correction="drop", step_guard=None,
                         threshold=AutoThreshold(window=100),
                         loss_threshold=AutoThreshold(max_flagged_fraction=0.5))
    result = run_stream_protocol(defence, load_stream_dataset("digits", random_state=seed),
                                 random_state=seed)
    assert result.flagged_fraction_poison == 1.0
    assert result.flagged_fraction_trigger == 1.0
    assert result.accuracy_trigger >= result.accuracy_burn_in - 0.01
    assert result.flagged_fraction_clean <= 0.02
