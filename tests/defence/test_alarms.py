"""alarms_: intervention episodes, their WARNING and their callback event."""

import io
import logging
import math
import pickle

import numpy as np
import pytest
import torch
from skorch.callbacks import Callback

from dsc_sklearn import DiscrepancyAwareOnlineClassifier
from dsc_sklearn.defence._alarms import (
    ALARM_FIELDS,
    EPISODE_GAP,
    interventions,
    record_interventions,
)

CLASSES = np.arange(10)


class Recorder(Callback):
    """A skorch callback that keeps every intervention it is told of."""

    def initialize(self):
        self.events = []
        return self

    def on_intervention(self, net, **kwargs):
        self.events.append(kwargs)


def _stream(digits, clf, passes=3):
    X, y = digits.X_train, digits.y_train
    for _ in range(passes):
        for start in range(0, len(X), 100):
            clf.partial_fit(X[start:start + 100], y[start:start + 100], classes=CLASSES)
    return clf


def _attack(digits, clf, n_batches=6):
    """Batches whose every label is shifted by one: large, harmful steps."""
    X, y = digits.X_train, digits.y_train
    for start in range(0, 100 * n_batches, 100):
        clf.partial_fit(X[start:start + 100], (y[start:start + 100] + 1) % 10)
    return clf


@pytest.fixture(scope="module")
def burnt_in(digits):
    clf = DiscrepancyAwareOnlineClassifier(input_bounds=(0.0, 1.0), random_state=0,
                                           callbacks=[("recorder", Recorder())])
    return _stream(digits, clf)


def _events(clf):
    return dict(clf.net_.callbacks_)["recorder"].events


def test_a_clean_stream_raises_no_alarm(burnt_in):
    assert burnt_in.n_batches_seen_ == 36
    assert list(burnt_in.alarms_) == []
    assert _events(burnt_in) == []


def test_an_attack_is_one_episode_one_warning_and_an_event_per_intervention(
        burnt_in, digits, caplog):
    clf = pickle.loads(pickle.dumps(burnt_in))
    with caplog.at_level(logging.WARNING, logger="dsc_sklearn"):
        _attack(digits, clf)
    assert clf.n_steps_scaled_ >= 5
    [episode] = clf.alarms_
    assert set(episode) == set(ALARM_FIELDS)
    assert episode["first_step"] == 37 and episode["last_step"] <= 42
    assert episode["n_steps"] == clf.n_steps_scaled_
    assert episode["kind"] in ("pulled back", "refused")
    assert episode["statistic"] > episode["bound"] > 0
    peak = clf.stream_log_[episode["peak_step"] - 1]
    assert peak["step"] == episode["peak_step"]
    assert peak["step_discrepancy"] == episode["statistic"]
    assert peak["step_bound"] == episode["bound"]
    [warning] = [r for r in caplog.records if r.name == "dsc_sklearn"]
    assert warning.levelno == logging.WARNING
    assert "step 37" in warning.getMessage() and "alarms_" in warning.getMessage()
    events = _events(clf)
    assert [event["step"] for event in events] == [
        record["step"] for record in clf.stream_log_ if record["step_scale"] < 1]
    assert events[-1]["episode"] == episode
    assert {"step", "kind", "statistic", "bound", "episode"} == set(events[0])


def _records(*steps):
    """Stream-log records: (step, step_scale, n_flagged) with fixed statistics."""
    return [{"step": step, "step_scale": scale, "n_flagged": flagged,
             "step_discrepancy": 0.1 * step, "step_bound": 0.05,
             "max_discrepancy": 2.0, "threshold": 1.0}
            for step, scale, flagged in steps]


def test_interventions_are_read_from_the_records():
    records = _records((1, 1.0, 0), (2, 0.5, 0), (3, 0.0, 0), (4, 1.0, 11), (5, 1.0, 10),
                       (6, math.nan, 0))
    records.append({"step": 7, "step_scale": 1.0, "n_flagged": 0, "rewound": 1.0,
                    "step_discrepancy": 0.3, "step_bound": 0.2})
    found = interventions(records, [100] * len(records))
    assert [(i["step"], i["kind"]) for i in found] == [
        (2, "pulled back"), (3, "refused"), (4, "flagged"), (7, "rewound")]
    assert (found[0]["statistic"], found[0]["bound"]) == pytest.approx((0.2, 0.05))
    assert (found[2]["statistic"], found[2]["bound"]) == (2.0, 1.0)


def test_episodes_merge_within_the_gap_and_take_the_most_severe_kind():
    alarms = []
    found = interventions(_records((10, 0.5, 0), (11, 0.0, 0), (13, 0.5, 0)), [100] * 3)
    events = record_interventions(alarms, found)
    assert [started for _, _, started in events] == [True, False, False]
    later = 13 + EPISODE_GAP + 1
    record_interventions(alarms, interventions(_records((later, 0.5, 0)), [100]))
    assert len(alarms) == 2
    first = alarms[0]
    assert (first["first_step"], first["last_step"], first["n_steps"]) == (10, 13, 3)
    # The refusal at step 11 is the peak, though step 13 went further past the bound.
    assert (first["kind"], first["peak_step"]) == ("refused", 11)
    assert first["statistic"] == pytest.approx(1.1)
    assert alarms[1]["first_step"] == later


def test_an_episode_is_replaced_not_changed_in_place():
    alarms = []
    record_interventions(alarms, interventions(_records((1, 0.5, 0)), [100]))
    before = list(alarms)
    record_interventions(alarms, interventions(_records((2, 0.0, 0)), [100]))
    assert before[0]["kind"] == "pulled back" and alarms[0]["kind"] == "refused"


def test_alarms_persist_in_checkpoints_and_pickles(burnt_in, digits):
    clf = _attack(digits, pickle.loads(pickle.dumps(burnt_in)), n_batches=2)
    buffer = io.BytesIO()
    clf.save_params(buffer)
    buffer.seek(0)
    restored = DiscrepancyAwareOnlineClassifier(input_bounds=(0.0, 1.0)).load_params(buffer)
    assert list(restored.alarms_) == list(clf.alarms_) != []
    # An older checkpoint, without the entry, loads with no alarms.
    payload = torch.load(io.BytesIO(buffer.getvalue()), weights_only=True)
    del payload["alarms"]
    older = io.BytesIO()
    torch.save(payload, older)
    older.seek(0)
    assert list(DiscrepancyAwareOnlineClassifier(input_bounds=(0.0, 1.0))
                .load_params(older).alarms_) == []
    payload["alarms"] = [{"kind": "exploded"}]
    forged = io.BytesIO()
    torch.save(payload, forged)
    forged.seek(0)
    with pytest.raises(ValueError, match="alarms entry is wrong"):
        DiscrepancyAwareOnlineClassifier(input_bounds=(0.0, 1.0)).load_params(forged)


def test_a_failed_call_takes_its_alarms_back(burnt_in, digits):
    class Failing(Recorder):
        def on_intervention(self, net, **kwargs):
            raise RuntimeError("the operator's pager is down")

    clf = pickle.loads(pickle.dumps(burnt_in))
    clf.set_params(callbacks=[("failing", Failing())])
    clf.net_.callbacks = clf.callbacks
    clf.net_.initialize_callbacks()
    X, y = digits.X_train[:100], (digits.y_train[:100] + 1) % 10
    with pytest.raises(RuntimeError, match="pager"):
        clf.partial_fit(X, y)
    assert list(clf.alarms_) == [] and clf.n_batches_seen_ == 36
    assert clf.n_steps_scaled_ == 0

