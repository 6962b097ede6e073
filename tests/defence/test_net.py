import copy
import math

import pytest
import torch
from torch import nn

import dsc_sklearn.defence._net as net_module
from dsc_sklearn.defence._net import LOG_FIELDS, DiscrepancyAwareNet, is_mode_invariant
from dsc_sklearn.defence.modules import MLP, SmallCNN
from dsc_sklearn.defence.thresholds import make_threshold

N_FEATURES, N_CLASSES, N_SAMPLES = 6, 3, 12
LR, MOMENTUM = 0.1, 0.9
FIELD = {name: i for i, name in enumerate(LOG_FIELDS)}


def _mlp():
    torch.manual_seed(0)
    return MLP(N_FEATURES, N_CLASSES, hidden_layer_sizes=(8,))


def _make_net(module, **kwargs):
    params = dict(
        criterion=nn.CrossEntropyLoss,
        optimizer=torch.optim.SGD,
        lr=LR,
        optimizer__momentum=MOMENTUM,
        batch_size=N_SAMPLES,
        max_epochs=1,
        train_split=None,
        callbacks="disable",
        device="cpu",
        classes=list(range(N_CLASSES)),
    )
    params.update(kwargs)
    torch.manual_seed(123)
    return DiscrepancyAwareNet(module=module, **params).initialize()


def _weights(module):
    return [p.detach().clone() for p in module.parameters()]


def _perturb(module, scale=0.5):
    torch.manual_seed(7)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn_like(p))


@pytest.fixture
def batch():
    torch.manual_seed(1)
    X = torch.rand(N_SAMPLES, N_FEATURES)
    y = torch.randint(0, N_CLASSES, (N_SAMPLES,))
    return X, y


def test_log_fields():
    assert LOG_FIELDS == (
        "loss", "mean_discrepancy", "max_discrepancy", "threshold", "n_flagged",
        "n_correction_steps", "step_discrepancy", "step_scale", "step_bound", "rewound",
    )


def test_initialize_builds_buffer_policy_and_first_snapshot():
    net = _make_net(_mlp(), history_size=3, snapshot_every=2, threshold=0.25)
    assert len(net.snapshots_) == 1
    assert net.snapshots_.history_size == 3 and net.snapshots_.snapshot_every == 2
    assert net.threshold_policy_.current().item() == 0.25
    assert net.mode_invariant_ is True
    for name, tensor in net.module_.state_dict().items():
        torch.testing.assert_close(net.snapshots_.snapshots[0][name], tensor)


@pytest.mark.parametrize("correction", ["none", "dsc", "drop", "descent", "adversarial"])
def test_train_step_returns_a_record_per_log_field(batch, correction):
    net = _make_net(_mlp(), correction=correction)
    step = net.train_step(batch)
    record = step["record"]
    assert isinstance(record, torch.Tensor)
    assert record.shape == (len(LOG_FIELDS),)
    assert record.dtype == torch.float32
    assert step["loss"].ndim == 0 and torch.isfinite(step["loss"])
    assert record[FIELD["loss"]].item() == pytest.approx(step["loss"].item())
    assert step["y_pred"].shape == (N_SAMPLES, N_CLASSES)


def test_correction_none_has_nan_discrepancy_fields(batch):
    net = _make_net(_mlp(), correction="none")
    record = net.train_step(batch)["record"]
    for field in ("mean_discrepancy", "max_discrepancy", "threshold"):
        assert math.isnan(record[FIELD[field]].item()), field
    assert record[FIELD["n_flagged"]].item() == 0
    assert record[FIELD["n_correction_steps"]].item() == 0
    assert net.threshold_policy_.n_updates_ == 0


@pytest.mark.parametrize("make_module", [_mlp, lambda: nn.Sequential(
    nn.Linear(N_FEATURES, 8), nn.Dropout(0.0), nn.Linear(8, N_CLASSES))])
def test_correction_none_equals_a_plain_sgd_step(batch, make_module):
    X, y = batch
    torch.manual_seed(0)
    module = make_module()
    reference = copy.deepcopy(module)
    net = _make_net(module, correction="none")
    net.train_step(batch)
    optimizer = torch.optim.SGD(reference.parameters(), lr=LR, momentum=MOMENTUM)
    reference.train()
    optimizer.zero_grad()
    nn.functional.cross_entropy(reference(X), y).backward()
    optimizer.step()
    for p, q in zip(net.module_.parameters(), reference.parameters()):
        torch.testing.assert_close(p, q)
    # A second step on another batch: gradients are reset, momentum carries over.
    X2, y2 = X.flip(0) * 2.0, y.roll(1)
    net.train_step((X2, y2))
    optimizer.zero_grad()
    nn.functional.cross_entropy(reference(X2), y2).backward()
    optimizer.step()
    for p, q in zip(net.module_.parameters(), reference.parameters()):
        torch.testing.assert_close(p, q)
    assert not all(torch.equal(p, q) for p, q in zip(net.module_.parameters(),
                                                    _weights(make_module())))


def test_discrepancy_fields_are_recorded(batch):
    X, _ = batch
    net = _make_net(_mlp(), threshold=1e9, correction="dsc")
    _perturb(net.module_)
    expected = net.discrepancy(X)
    record = net.train_step(batch)["record"]
    assert record[FIELD["mean_discrepancy"]].item() == pytest.approx(expected.mean().item(), rel=1e-5)
    assert record[FIELD["max_discrepancy"]].item() == pytest.approx(expected.max().item(), rel=1e-5)
    assert record[FIELD["threshold"]].item() == pytest.approx(1e9)
    assert record[FIELD["n_flagged"]].item() == 0
    assert expected.min() > 0


def test_drop_with_everything_flagged_takes_no_optimizer_step(batch):
    net = _make_net(_mlp(), correction="drop", threshold=0.0, snapshot_every=1)
    _perturb(net.module_)
    before = _weights(net.module_)
    step = net.train_step(batch)
    record = step["record"]
    for p, q in zip(net.module_.parameters(), before):
        assert torch.equal(p, q)
    assert math.isnan(step["loss"].item())
    assert math.isnan(record[FIELD["loss"]].item())
    assert record[FIELD["n_flagged"]].item() == N_SAMPLES
    assert record[FIELD["threshold"]].item() == 0.0
    assert net.snapshots_.n_steps_ == 1
    assert len(net.snapshots_) == 2  # the snapshot clock advanced
    assert net.threshold_policy_.n_updates_ == 1
    assert all(p.grad is None for p in net.module_.parameters())


def test_drop_trains_only_on_unflagged_samples(batch):
    X, y = batch
    net = _make_net(_mlp(), correction="drop")
    _perturb(net.module_)
    statistic = net.discrepancy(X)
    threshold = statistic.median().item()
    net.threshold_policy_ = make_threshold(threshold)
    keep = statistic <= threshold
    assert 0 < keep.sum() < N_SAMPLES
    reference = copy.deepcopy(net.module_)
    step = net.train_step(batch)
    optimizer = torch.optim.SGD(reference.parameters(), lr=LR, momentum=MOMENTUM)
    nn.functional.cross_entropy(reference(X[keep]), y[keep]).backward()
    optimizer.step()
    for p, q in zip(net.module_.parameters(), reference.parameters()):
        torch.testing.assert_close(p, q)
    assert step["record"][FIELD["n_flagged"]].item() == (~keep).sum().item()
    assert step["y_pred"].shape == (int(keep.sum()), N_CLASSES)


def test_dsc_with_threshold_zero_counts_correction_steps(batch):
    net = _make_net(_mlp(), correction="dsc", threshold=0.0, max_correction_steps=3,
                    epsilon=0.2, step_size=0.02)
    _perturb(net.module_)
    before = _weights(net.module_)
    step = net.train_step(batch)
    record = step["record"]
    assert record[FIELD["n_flagged"]].item() == N_SAMPLES
    assert record[FIELD["n_correction_steps"]].item() == 3
    assert torch.isfinite(step["loss"])
    assert not all(torch.equal(p, q) for p, q in zip(net.module_.parameters(), before))


def test_dsc_without_flags_takes_no_correction_step(batch):
    net = _make_net(_mlp(), correction="dsc", threshold="auto")
    record = net.train_step(batch)["record"]
    assert math.isinf(record[FIELD["threshold"]].item())
    assert record[FIELD["n_flagged"]].item() == 0
    assert record[FIELD["n_correction_steps"]].item() == 0


@pytest.mark.parametrize("correction, expected", [("descent", 4), ("adversarial", 4)])
def test_ungated_corrections_always_take_max_steps(batch, correction, expected):
    net = _make_net(_mlp(), correction=correction, max_correction_steps=expected)
    record = net.train_step(batch)["record"]
    assert record[FIELD["n_correction_steps"]].item() == expected


def test_snapshot_cadence_follows_training_steps(batch):
    net = _make_net(_mlp(), snapshot_every=2, history_size=2)
    for _ in range(5):
        net.train_step(batch)
    assert net.snapshots_.n_steps_ == 5
    assert len(net.snapshots_) == 2
    assert net.module_.training


@pytest.mark.parametrize(
    "module, expected",
    [
        (MLP(4, 3), True),
        (SmallCNN(64, 3, channels=(2, 4)), True),
        (SmallCNN(40, 3, image_shape=(1, 40), channels=(2, 4)), True),
        (nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2)), True),
        (nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5), nn.Linear(4, 2)), False),
        (nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Linear(4, 2)), False),
    ],
)
def test_is_mode_invariant(module, expected):
    assert is_mode_invariant(module) is expected


def test_net_records_mode_invariance():
    bn = nn.Sequential(nn.Linear(N_FEATURES, 4), nn.BatchNorm1d(4), nn.Linear(4, N_CLASSES))
    assert _make_net(bn).mode_invariant_ is False
    assert _make_net(_mlp()).mode_invariant_ is True


@pytest.mark.parametrize(
    "options",
    [
        dict(correction="none"),
        dict(correction="dsc", threshold="auto"),
        dict(correction="dsc", threshold=0.0, max_correction_steps=2),
        dict(correction="drop", threshold=0.0),
        dict(correction="descent", max_correction_steps=2),
    ],
)
def test_mode_invariant_reuse_matches_the_eval_path(batch, monkeypatch, options):
    def run(invariant):
        monkeypatch.setattr(net_module, "is_mode_invariant", lambda module: invariant)
        net = _make_net(_mlp(), snapshot_every=1, **options)
        assert net.mode_invariant_ is invariant
        if options.get("threshold") == 0.0:
            _perturb(net.module_, scale=0.1)
        records = [net.train_step(batch)["record"] for _ in range(2)]
        return _weights(net.module_), torch.stack(records)

    reuse_weights, reuse_records = run(True)
    plain_weights, plain_records = run(False)
    for p, q in zip(reuse_weights, plain_weights):
        torch.testing.assert_close(p, q)
    torch.testing.assert_close(reuse_records, plain_records, equal_nan=True)


@pytest.mark.parametrize("correction", ["dsc", "drop"])
def test_partly_flagged_batches_recompute_only_the_changed_rows(batch, monkeypatch,
                                                                correction):
    def run(invariant):
        monkeypatch.setattr(net_module, "is_mode_invariant", lambda module: invariant)
        net = _make_net(_mlp(), snapshot_every=1, correction=correction,
                        max_correction_steps=3)
        _perturb(net.module_, scale=0.1)
        infer, forwarded = net.infer_training, []
        net.infer_training = lambda X: forwarded.append(len(X)) or infer(X)
        records = []
        for _ in range(2):
            # A threshold at the median flags about half of the rows.
            net.configure(threshold=float(net.discrepancy(batch[0]).median()))
            records.append(net.train_step(batch)["record"])
        return _weights(net.module_), torch.stack(records), forwarded

    reuse_weights, reuse_records, forwarded = run(True)
    plain_weights, plain_records, _ = run(False)
    n_flagged = reuse_records[:, FIELD["n_flagged"]].int().tolist()
    assert all(0 < n < N_SAMPLES for n in n_flagged), n_flagged
    expected = {"dsc": [N_SAMPLES, n_flagged[0], N_SAMPLES, n_flagged[1]],
                "drop": [N_SAMPLES, N_SAMPLES]}[correction]
    assert forwarded == expected
    for p, q in zip(reuse_weights, plain_weights):
        torch.testing.assert_close(p, q)
    torch.testing.assert_close(reuse_records, plain_records, equal_nan=True)


def test_batchnorm_module_trains_and_keeps_train_mode(batch):
    torch.manual_seed(0)
    bn = nn.Sequential(nn.Linear(N_FEATURES, 4), nn.BatchNorm1d(4), nn.Linear(4, N_CLASSES))
    net = _make_net(bn, threshold=0.0, correction="dsc", max_correction_steps=2)
    running_mean = bn[1].running_mean.clone()
    record = net.train_step(batch)["record"]
    assert net.module_.training
    assert torch.isfinite(record[FIELD["loss"]])
    assert bn[1].num_batches_tracked.item() == 1  # only the training forward updated it
    assert not torch.equal(bn[1].running_mean, running_mean)


def test_clip_value_bounds_the_applied_gradient(batch):
    X, y = batch
    clip = 1e-3
    module = _mlp()
    reference = copy.deepcopy(module)
    reference.zero_grad()
    nn.functional.cross_entropy(reference(X), y).backward()
    grads = [p.grad.clone() for p in reference.parameters()]
    total = max(g.abs().max() for g in grads)
    assert total > 10 * clip  # clipping is active

    net = _make_net(module, correction="none", clip_value=clip)
    before = _weights(net.module_)
    net.train_step(batch)
    applied = [p.grad for p in net.module_.parameters()]
    assert max(g.abs().max() for g in applied) <= clip * (1 + 1e-4)
    for g, raw in zip(applied, grads):
        torch.testing.assert_close(g, raw * clip / total, rtol=1e-4, atol=1e-9)
    # First SGD step with momentum: the update is lr times the clipped gradient.
    deltas = [b - p for p, b in zip(net.module_.parameters(), before)]
    assert max(d.abs().max() for d in deltas) <= LR * clip * (1 + 1e-3)


def test_without_clip_value_the_gradient_is_raw(batch):
    X, y = batch
    module = _mlp()
    reference = copy.deepcopy(module)
    nn.functional.cross_entropy(reference(X), y).backward()
    net = _make_net(module, correction="none")
    net.train_step(batch)
    for p, q in zip(net.module_.parameters(), reference.parameters()):
        torch.testing.assert_close(p.grad, q.grad)


def _write_a_call(history):
    history.new_epoch()
    history.record("epoch", len(history))
    for loss in (0.5, 0.25):
        history.new_batch()
        history.record_batch("train_loss", loss)
        history.record_batch("train_batch_size", 4)
    history.record("train_batch_count", 2)


def test_stream_history_writes_what_skorchs_history_writes():
    from skorch.history import History

    ours, skorchs = net_module.StreamHistory(), History()
    for _ in range(3):
        _write_a_call(ours)
        _write_a_call(skorchs)
    assert ours.to_list() == skorchs.to_list()
    assert ours[:, "batches", :, "train_loss"] == skorchs[:, "batches", :, "train_loss"]
    with pytest.raises(ValueError, match="new_epoch"):
        net_module.StreamHistory().record("epoch", 1)


def test_stream_history_writes_never_copy_the_rows():
    class CountingHistory(net_module.StreamHistory):
        copies = 0

        def to_list(self):
            CountingHistory.copies += 1
            return super().to_list()

    history = CountingHistory([{"batches": []}] * 100)
    _write_a_call(history)
    assert CountingHistory.copies == 0


def test_the_net_keeps_a_stream_history(batch):
    net = _make_net(_mlp())
    assert type(net.history) is net_module.StreamHistory
    net.stream_epoch(*batch)
    assert net.history[-1, "train_batch_count"] == 1
    assert type(copy.deepcopy(net).history) is net_module.StreamHistory
