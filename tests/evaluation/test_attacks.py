import re
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from dsc_sklearn.evaluation.attacks import AccumulativePoisoningAttack, UniformNoiseAttack

OBJECTIVES = ["reg", "second", "normal"]


@pytest.fixture(scope="module")
def batches(pixel_digits):
    X, y = pixel_digits
    parts = {"trigger": slice(0, 50), "val": slice(50, 100), "stream": slice(100, 200)}
    return {name: (X[s], y[s]) for name, s in parts.items()}


def _train(module, X, y, n_steps=300, seed=0):
    torch.manual_seed(seed)
    rng = np.random.RandomState(seed)
    optimizer = torch.optim.SGD(module.parameters(), lr=0.1, momentum=0.9)
    module.train()
    for _ in range(n_steps):
        rows = rng.randint(0, len(X), 64)
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(
            module(torch.as_tensor(X[rows])), torch.as_tensor(y[rows])
        )
        loss.backward()
        optimizer.step()
    return module


class SmallCNN(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(1, 4, 3, padding=1),
            torch.nn.BatchNorm2d(4),
            torch.nn.ReLU(),
            torch.nn.MaxPool2d(2),
        )
        self.head = torch.nn.Linear(4 * 4 * 4, 10)

    def forward(self, X):
        return self.head(self.features(X.reshape(-1, 1, 8, 8)).flatten(1))


def _mlp():
    return torch.nn.Sequential(
        torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10)
    )


def _bn_mlp():
    return torch.nn.Sequential(
        torch.nn.Linear(64, 32),
        torch.nn.BatchNorm1d(32),
        torch.nn.ReLU(),
        torch.nn.Dropout(0.2),
        torch.nn.Linear(32, 10),
    )


MODELS = {"mlp": _mlp, "bn_mlp": _bn_mlp, "cnn": SmallCNN}


@pytest.fixture(scope="module")
def victims(pixel_digits):
    X, y = pixel_digits
    out = {}
    for name, make in MODELS.items():
        module = _train(make(), X[200:], y[200:], n_steps=150)
        module.zero_grad(set_to_none=True)  # a victim without grads, whatever runs first
        module.eval()
        out[name] = SimpleNamespace(module_=module, classes_=np.arange(10))
    return out


@pytest.fixture
def victim(victims):
    return victims["mlp"]


def _snapshot(module):
    return {
        "state": {k: v.detach().clone() for k, v in module.state_dict().items()},
        "grads": [None if p.grad is None else p.grad.clone() for p in module.parameters()],
        "requires_grad": [p.requires_grad for p in module.parameters()],
        "training": [m.training for m in module.modules()],
    }


def _assert_same_snapshot(before, after):
    assert before["state"].keys() == after["state"].keys()
    for key, value in before["state"].items():
        assert torch.equal(value, after["state"][key]), key
    for g0, g1 in zip(before["grads"], after["grads"]):
        assert (g0 is None) == (g1 is None)
        if g0 is not None:
            assert torch.equal(g0, g1)
    assert before["requires_grad"] == after["requires_grad"]
    assert before["training"] == after["training"]


def _all_calls(attack, victim, batches):
    (Xt, yt), (Xv, yv), (Xs, ys) = batches["trigger"], batches["val"], batches["stream"]
    X_trigger = attack.craft_trigger(victim, Xt, yt, Xv, yv)
    attack.poison_batch(victim, Xs, ys, X_trigger, yt, Xv, yv)
    attack.objective_value(victim, Xs, ys, X_trigger, yt, Xv, yv)
    attack.trigger_alignment(victim, X_trigger, yt, Xv, yv)


@pytest.mark.parametrize("objective", OBJECTIVES)
@pytest.mark.parametrize("model", list(MODELS))
def test_victim_state_is_untouched(victims, batches, model, objective):
    victim = victims[model]
    module = victim.module_
    module.train()
    next(m for m in module.modules() if isinstance(m, torch.nn.Linear)).eval()
    loss = module(torch.as_tensor(batches["val"][0])).square().mean()
    loss.backward()
    before = _snapshot(module)
    try:
        attack = AccumulativePoisoningAttack(
            objective=objective, poison_fraction=0.5, random_state=0
        )
        _all_calls(attack, victim, batches)
        _assert_same_snapshot(before, _snapshot(module))
    finally:
        module.zero_grad(set_to_none=True)
        module.eval()


def test_victim_without_grads_keeps_none(victim, batches):
    before = _snapshot(victim.module_)
    assert all(g is None for g in before["grads"])
    _all_calls(AccumulativePoisoningAttack(), victim, batches)
    _assert_same_snapshot(before, _snapshot(victim.module_))


def test_runs_under_no_grad(victim, batches):
    (Xt, yt), (Xv, yv) = batches["trigger"], batches["val"]
    with torch.no_grad():
        X_trigger = AccumulativePoisoningAttack().craft_trigger(victim, Xt, yt, Xv, yv)
    assert not np.array_equal(X_trigger, Xt)


@pytest.mark.parametrize("objective", OBJECTIVES)
@pytest.mark.parametrize("epsilon", [0.05, 0.2])
def test_perturbation_within_ball_and_bounds(victim, batches, objective, epsilon):
    (Xt, yt), (Xv, yv), (Xs, ys) = batches["trigger"], batches["val"], batches["stream"]
    attack = AccumulativePoisoningAttack(epsilon=epsilon, objective=objective)
    X_trigger = attack.craft_trigger(victim, Xt, yt, Xv, yv)
    X_poisoned, is_poison = attack.poison_batch(victim, Xs, ys, X_trigger, yt, Xv, yv)
    for X_new, X_old in [(X_trigger, Xt), (X_poisoned, Xs)]:
        assert X_new.dtype == np.float32 and X_new.shape == X_old.shape
        shift = np.abs(X_new - X_old)
        assert shift.max() <= epsilon + 1e-6
        assert shift.max() >= epsilon / 2
        assert X_new.min() >= 0.0 and X_new.max() <= 1.0
    assert is_poison.dtype == bool and is_poison.all()


def test_unbounded_inputs_are_not_clamped(victim, batches):
    (Xt, yt), (Xv, yv), (Xs, ys) = batches["trigger"], batches["val"], batches["stream"]
    for bounds, expect_outside in [((0.0, 1.0), False), (None, True)]:
        attack = AccumulativePoisoningAttack(epsilon=0.1, input_bounds=bounds)
        X_trigger = attack.craft_trigger(victim, Xt, yt, Xv, yv)
        X_poisoned, _ = attack.poison_batch(victim, Xs, ys, X_trigger, yt, Xv, yv)
        for X_new, X_old in [(X_trigger, Xt), (X_poisoned, Xs)]:
            assert np.abs(X_new - X_old).max() <= 0.1 + 1e-6
            outside = (X_new < 0).any() or (X_new > 1).any()
            assert outside == expect_outside


def test_custom_bounds(victim, batches):
    (Xt, yt), (Xv, yv) = batches["trigger"], batches["val"]
    X_trigger = AccumulativePoisoningAttack(input_bounds=(0.1, 0.9)).craft_trigger(
        victim, Xt, yt, Xv, yv
    )
    assert X_trigger.min() >= 0.1 and X_trigger.max() <= 0.9


@pytest.mark.parametrize("model", list(MODELS))
def test_crafted_trigger_lowers_alignment(victims, batches, model):
    victim = victims[model]
    (Xt, yt), (Xv, yv) = batches["trigger"], batches["val"]
    attack = AccumulativePoisoningAttack()
    X_trigger = attack.craft_trigger(victim, Xt, yt, Xv, yv)
    clean = attack.trigger_alignment(victim, Xt, yt, Xv, yv)
    crafted = attack.trigger_alignment(victim, X_trigger, yt, Xv, yv)
    assert crafted < clean - 0.1


def test_crafted_trigger_raises_validation_loss_after_one_step(victim, batches):
    (Xt, yt), (Xv, yv) = batches["trigger"], batches["val"]
    X_trigger = AccumulativePoisoningAttack().craft_trigger(victim, Xt, yt, Xv, yv)

    def val_loss_after_step(X):
        module = _mlp()
        module.load_state_dict(victim.module_.state_dict())
        loss = torch.nn.functional.cross_entropy(module(torch.as_tensor(X)), torch.as_tensor(yt))
        grads = torch.autograd.grad(loss, list(module.parameters()))
        with torch.no_grad():
            for p, g in zip(module.parameters(), grads):
                p -= 0.1 * g
            return float(
                torch.nn.functional.cross_entropy(module(torch.as_tensor(Xv)), torch.as_tensor(yv))
            )

    assert val_loss_after_step(X_trigger) > val_loss_after_step(Xt)


@pytest.mark.parametrize("objective", OBJECTIVES)
@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_poison_batch_raises_objective(victims, batches, model, objective):
    victim = victims[model]
    (Xt, yt), (Xv, yv), (Xs, ys) = batches["trigger"], batches["val"], batches["stream"]
    attack = AccumulativePoisoningAttack(objective=objective, epsilon=0.05, n_steps=5)
    X_trigger = attack.craft_trigger(victim, Xt, yt, Xv, yv)
    X_poisoned, _ = attack.poison_batch(victim, Xs, ys, X_trigger, yt, Xv, yv)
    clean = attack.objective_value(victim, Xs, ys, X_trigger, yt, Xv, yv)
    poisoned = attack.objective_value(victim, X_poisoned, ys, X_trigger, yt, Xv, yv, X_clean=Xs)
    assert poisoned > clean


def test_normal_objective_needs_no_trigger(victim, batches):
    (Xv, yv), (Xs, ys) = batches["val"], batches["stream"]
    attack = AccumulativePoisoningAttack(objective="normal")
    X_poisoned, _ = attack.poison_batch(victim, Xs, ys, None, None, Xv, yv)
    assert X_poisoned.shape == Xs.shape
    with pytest.raises(ValueError, match="needs the poisoned trigger"):
        AccumulativePoisoningAttack().poison_batch(victim, Xs, ys, None, None, Xv, yv)


@pytest.mark.parametrize("fraction, n_expected", [(0.3, 30), (0.001, 1), (1.0, 100)])
def test_poison_fraction_masks_rows(victim, batches, fraction, n_expected):
    (Xt, yt), (Xv, yv), (Xs, ys) = batches["trigger"], batches["val"], batches["stream"]
    attack = AccumulativePoisoningAttack(poison_fraction=fraction, random_state=0)
    X_poisoned, is_poison = attack.poison_batch(victim, Xs, ys, Xt, yt, Xv, yv)
    assert is_poison.dtype == bool and is_poison.sum() == n_expected
    np.testing.assert_array_equal(X_poisoned[~is_poison], Xs[~is_poison])
    changed = (X_poisoned != Xs).any(axis=1)
    assert not changed[~is_poison].any()
    assert changed[is_poison].mean() > 0.9


def test_random_state_determinism(victim, batches):
    (Xt, yt), (Xv, yv), (Xs, ys) = batches["trigger"], batches["val"], batches["stream"]

    def two_batches(attack):
        return [attack.poison_batch(victim, Xs, ys, Xt, yt, Xv, yv) for _ in range(2)]

    attack = AccumulativePoisoningAttack(poison_fraction=0.2, random_state=42)
    first = two_batches(attack)
    for again in (two_batches(clone(attack)), two_batches(attack.set_params(random_state=42))):
        for (X0, m0), (X1, m1) in zip(first, again):
            np.testing.assert_array_equal(m0, m1)
            np.testing.assert_array_equal(X0, X1)
    assert not np.array_equal(first[0][1], first[1][1])
    other = two_batches(AccumulativePoisoningAttack(poison_fraction=0.2, random_state=7))
    assert not np.array_equal(first[0][1], other[0][1])


def test_generator_instance_is_used(victim, batches):
    (Xt, yt), (Xv, yv), (Xs, ys) = batches["trigger"], batches["val"], batches["stream"]
    rng = np.random.RandomState(3)
    state = rng.get_state()[1].copy()
    attack = AccumulativePoisoningAttack(poison_fraction=0.5, random_state=rng)
    attack.poison_batch(victim, Xs, ys, Xt, yt, Xv, yv)
    assert not np.array_equal(state, rng.get_state()[1])


def test_accepts_array_likes_and_label_sets(victim, batches):
    (Xt, yt), (Xv, yv), (Xs, ys) = batches["trigger"], batches["val"], batches["stream"]
    letters = np.array(list("abcdefghij"))
    named = SimpleNamespace(module_=victim.module_, classes_=letters)
    attack = AccumulativePoisoningAttack()
    X_ref = attack.craft_trigger(victim, Xt, yt, Xv, yv)
    X_named = attack.craft_trigger(
        named, Xt.astype(np.float64).tolist(), letters[yt].tolist(), Xv, letters[yv]
    )
    np.testing.assert_allclose(X_named, X_ref, atol=1e-6)
    X_poisoned, _ = attack.poison_batch(named, Xs, letters[ys], X_ref, letters[yt], Xv, letters[yv])
    assert X_poisoned.dtype == np.float32


def test_does_not_modify_inputs(victim, batches):
    (Xt, yt), (Xv, yv), (Xs, ys) = batches["trigger"], batches["val"], batches["stream"]
    copies = [a.copy() for a in (Xt, yt, Xv, yv, Xs, ys)]
    attack = AccumulativePoisoningAttack()
    X_trigger = attack.craft_trigger(victim, Xt, yt, Xv, yv)
    attack.poison_batch(victim, Xs, ys, X_trigger, yt, Xv, yv)
    for a, b in zip(copies, (Xt, yt, Xv, yv, Xs, ys)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "params, message",
    [
        ({"epsilon": -0.1}, "'epsilon' parameter .* range [0.0, inf)"),
        ({"epsilon": "big"}, "'epsilon' parameter"),
        ({"epsilon": float("nan")}, "'epsilon' parameter"),
        ({"n_steps": 0}, "'n_steps' parameter .* int in the range [1, inf)"),
        ({"n_steps": 2.5}, "'n_steps' parameter"),
        ({"n_steps": True}, "'n_steps' parameter"),
        ({"step_size": 0.0}, "'step_size' parameter .* range (0.0, inf)"),
        ({"gamma": -1}, "'gamma' parameter .* range [0.0, inf)"),
        ({"objective": "first"}, "'objective' parameter .* a str among"),
        ({"poison_fraction": 0.0}, "'poison_fraction' parameter .* range (0.0, 1.0]"),
        ({"poison_fraction": 1.5}, "'poison_fraction' parameter .* range (0.0, 1.0]"),
        ({"input_bounds": (1.0, 0.0)}, "'input_bounds' parameter .* low < high"),
        ({"input_bounds": 1.0}, "'input_bounds' parameter"),
    ],
)
def test_bad_parameters_raise(victim, batches, params, message):
    (Xt, yt), (Xv, yv), (Xs, ys) = batches["trigger"], batches["val"], batches["stream"]
    attack = AccumulativePoisoningAttack(**params)
    with pytest.raises(ValueError, match=re.escape(message).replace(r"\.\*", ".*")):
        attack.craft_trigger(victim, Xt, yt, Xv, yv)
    with pytest.raises(ValueError, match="AccumulativePoisoningAttack"):
        attack.poison_batch(victim, Xs, ys, Xt, yt, Xv, yv)


def test_bad_inputs_raise(victim, batches):
    (Xt, yt), (Xv, yv) = batches["trigger"], batches["val"]
    attack = AccumulativePoisoningAttack()
    with pytest.raises(ValueError, match=r"X_trigger holds labels \[10\] that are not among"):
        attack.craft_trigger(victim, Xt, np.full_like(yt, 10), Xv, yv)
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        attack.craft_trigger(victim, Xt, yt[:-1], Xv, yv)
    with pytest.raises(ValueError, match="NaN"):
        attack.craft_trigger(victim, np.full_like(Xt, np.nan), yt, Xv, yv)
    with pytest.raises(ValueError, match="2D array"):
        attack.craft_trigger(victim, Xt[0], yt[:1], Xv, yv)
    fitted = SimpleNamespace(module_=victim.module_, classes_=np.arange(10), n_features_in_=32)
    with pytest.raises(ValueError, match="X_trigger has 64 features, but .* expects 32"):
        attack.craft_trigger(fitted, Xt, yt, Xv, yv)
    with pytest.raises(NotFittedError, match="must be fitted"):
        attack.craft_trigger(SimpleNamespace(), Xt, yt, Xv, yv)


def test_default_step_size_and_params():
    attack = AccumulativePoisoningAttack()
    assert attack.get_params() == {
        "epsilon": 0.2,
        "gamma": 1.0,
        "input_bounds": (0.0, 1.0),
        "n_steps": 2,
        "objective": "reg",
        "poison_fraction": 1.0,
        "random_state": None,
        "step_size": None,
    }
    assert repr(AccumulativePoisoningAttack(epsilon=0.1)) == (
        "AccumulativePoisoningAttack(epsilon=0.1)"
    )
    assert attack._check_params()[1] == pytest.approx(0.2)
    assert AccumulativePoisoningAttack(n_steps=4, epsilon=0.1)._check_params()[1] == 0.05


def test_cnn_reshaping_inside_forward(victims, batches):
    victim = victims["cnn"]
    (Xt, yt), (Xv, yv), (Xs, ys) = batches["trigger"], batches["val"], batches["stream"]
    attack = AccumulativePoisoningAttack(poison_fraction=0.5, random_state=0)
    X_trigger = attack.craft_trigger(victim, Xt, yt, Xv, yv)
    X_poisoned, is_poison = attack.poison_batch(victim, Xs, ys, X_trigger, yt, Xv, yv)
    assert X_poisoned.shape == (100, 64) and is_poison.sum() == 50
    assert np.abs(X_poisoned - Xs).max() <= 0.2 + 1e-6


def test_uniform_noise_attack(victim, batches):
    (Xt, yt), (Xv, yv), (Xs, ys) = batches["trigger"], batches["val"], batches["stream"]
    attack = UniformNoiseAttack(epsilon=0.1, random_state=0)
    X_noisy, is_poison = attack.poison_batch(victim, Xs, ys, Xt, yt, Xv, yv)
    assert X_noisy.dtype == np.float32 and is_poison.all()
    shift = np.abs(X_noisy - Xs)
    assert shift.max() <= 0.1 + 1e-6 and X_noisy.min() >= 0 and X_noisy.max() <= 1
    assert shift[(Xs > 0.1) & (Xs < 0.9)].mean() == pytest.approx(0.05, abs=0.01)
    X_again, _ = UniformNoiseAttack(epsilon=0.1, random_state=0).poison_batch(victim, Xs, ys)
    np.testing.assert_array_equal(X_noisy, X_again)
    X_next, _ = attack.poison_batch(victim, Xs, ys)
    assert not np.array_equal(X_noisy, X_next)
    X_free, _ = UniformNoiseAttack(epsilon=0.1, input_bounds=None).poison_batch(None, Xs, ys)
    assert (X_free < 0).any()

    X_trigger = attack.craft_trigger(victim, Xt, yt, Xv, yv)
    np.testing.assert_array_equal(X_trigger, Xt)
    assert X_trigger is not Xt and not np.shares_memory(X_trigger, Xt)

    with pytest.raises(ValueError, match="'epsilon' parameter of UniformNoiseAttack"):
        UniformNoiseAttack(epsilon=-1).poison_batch(victim, Xs, ys)


def _online_run(seed, poisoned, data, n_burn_in_epochs=5, n_online=30):
    """Burn-in, accumulative phase, trigger re-crafted on the final model, one step on it."""
    X_train, y_train, X_val, y_val, X_trig, y_trig, X_test, y_test = data
    rng = np.random.RandomState(seed)
    torch.manual_seed(seed)
    module = torch.nn.Sequential(
        torch.nn.Linear(64, 128), torch.nn.ReLU(),
        torch.nn.Linear(128, 128), torch.nn.ReLU(),
        torch.nn.Linear(128, 10),
    )
    optimizer = torch.optim.SGD(module.parameters(), lr=0.1, momentum=0.9)

    def step(X, y):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(
            module(torch.as_tensor(X)), torch.as_tensor(y)
        ).backward()
        optimizer.step()

    def accuracy():
        with torch.no_grad():
            return 100 * float((module(torch.as_tensor(X_test)).argmax(1).numpy() == y_test).mean())

    n_batches = len(X_train) // 100
    for _ in range(n_burn_in_epochs):
        order = rng.permutation(len(X_train))
        for b in range(n_batches):
            rows = order[100 * b:100 * (b + 1)]
            step(X_train[rows], y_train[rows])
    victim = SimpleNamespace(module_=module, classes_=np.arange(10))
    attack = AccumulativePoisoningAttack(random_state=seed)
    X_trigger = attack.craft_trigger(victim, X_trig, y_trig, X_val, y_val)
    stream = np.concatenate([rng.permutation(len(X_train)) for _ in range(n_online // n_batches + 1)])
    for t in range(n_online):
        rows = stream[100 * t:100 * (t + 1)]
        X, y = X_train[rows], y_train[rows]
        if poisoned:
            X, _ = attack.poison_batch(victim, X, y, X_trigger, y_trig, X_val, y_val)
        step(X, y)
    before_trigger = accuracy()
    step(attack.craft_trigger(victim, X_trig, y_trig, X_val, y_val), y_trig)
    return before_trigger, accuracy()


def test_end_to_end_accumulative_attack_hurts_plain_sgd(pixel_digits):
    X, y = pixel_digits
    data = (X[700:], y[700:], X[500:600], y[500:600], X[600:700], y[600:700], X[:500], y[:500])
    runs = np.array(
        [_online_run(seed, False, data, n_online=20) + _online_run(seed, True, data, n_online=20)
         for seed in range(3)]
    )
    clean_before, clean_after, attacked_before, attacked_after = runs.T
    assert (attacked_after < clean_before).all(), runs
    assert np.mean(clean_before - attacked_after) >= 8, runs
    assert np.mean(clean_after - attacked_after) > 2, runs
