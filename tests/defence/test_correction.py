import math

import pytest
import torch
from torch import nn
from torch.nn.functional import cross_entropy

from dsc_sklearn.defence.correction import (
    CORRECTIONS,
    BaseCorrection,
    adversarial_examples,
    discrepancy_aware_correction,
    loss_descent,
    make_correction,
    project,
)

EPS = 0.1
STEP = 0.02
BOUNDS = (0.0, 1.0)


class NaNForMarkedRows(nn.Module):
    """A linear model whose logits are NaN for rows with X[:, 0] > 10."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.linear = nn.Linear(6, 3)

    def forward(self, X):
        marked = X[:, :1] > 10
        return self.linear(X) * torch.where(marked, math.nan, 1.0)


class ModeRecorder(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.linear = nn.Linear(6, 3)
        self.seen_modes = []

    def forward(self, X):
        self.seen_modes.append(self.training)
        return self.linear(X)


@pytest.fixture
def module():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))


@pytest.fixture
def batch():
    torch.manual_seed(1)
    X = torch.rand(8, 6)
    y = torch.randint(0, 3, (8,))
    return X, y


def _row_loss(module, X, y):
    with torch.no_grad():
        return cross_entropy(module(X), y, reduction="none")


def _always(mask_value):
    def still_flagged(X_corrected, y_rows, logits):
        return torch.full((len(X_corrected),), mask_value)
    return still_flagged


def _dsc(module, X, y, flagged, still_flagged, **kwargs):
    options = dict(epsilon=EPS, step_size=STEP, max_steps=5, input_bounds=BOUNDS)
    options.update(kwargs)
    return discrepancy_aware_correction(module, X, y, flagged, still_flagged, **options)


def _one_signed_step(module, X, y, step, epsilon, bounds):
    Xg = X.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(cross_entropy(module(Xg), y, reduction="sum"), Xg)
    return project(X - step * grad.sign(), X, epsilon, bounds)


def test_corrections_name_their_strategies():
    assert tuple(CORRECTIONS) == ("dsc", "none", "drop", "descent", "adversarial")
    for name, strategy in CORRECTIONS.items():
        assert isinstance(make_correction(name), strategy)
        assert issubclass(strategy, BaseCorrection)
    assert not make_correction("none").gated
    with pytest.raises(ValueError, match="correction must be one of"):
        make_correction("clip")
    with pytest.raises(ValueError, match="correction must be one of"):
        make_correction(["dsc"])


def test_project_clamps_to_ball_then_bounds():
    X_clean = torch.tensor([[0.5, 0.05, 0.95]])
    X = torch.tensor([[0.9, -0.5, 1.5]])
    out = project(X, X_clean, 0.2, (0.0, 1.0))
    torch.testing.assert_close(out, torch.tensor([[0.7, 0.0, 1.0]]))


def test_project_inside_ball_is_identity():
    X_clean = torch.rand(4, 3)
    X = X_clean + 0.05
    torch.testing.assert_close(project(X, X_clean, 0.1), X)


def test_project_without_bounds_does_not_clamp():
    X_clean = torch.tensor([[2.0, -3.0]])
    X = torch.tensor([[2.5, -3.05]])
    out = project(X, X_clean, 0.2, None)
    torch.testing.assert_close(out, torch.tensor([[2.2, -3.05]]))


def test_project_is_per_element_in_the_ball():
    torch.manual_seed(3)
    X_clean = torch.rand(10, 5)
    X = X_clean + torch.randn(10, 5)
    out = project(X, X_clean, 0.3, (0.0, 1.0))
    assert (out - X_clean).abs().max() <= 0.3 + 1e-6
    assert out.min() >= 0 and out.max() <= 1


def test_dsc_stays_in_ball_and_bounds(module, batch):
    X, y = batch
    X_new, n_steps = _dsc(module, X, y, torch.ones(8, dtype=torch.bool), _always(True),
                          step_size=0.05, max_steps=6)
    assert n_steps == 6
    assert (X_new - X).abs().max() <= EPS + 1e-6
    assert X_new.min() >= 0 and X_new.max() <= 1
    assert not torch.equal(X_new, X)


def test_dsc_without_bounds_may_leave_the_unit_box(module, batch):
    X, y = batch
    X_new, _ = _dsc(module, X, y, torch.ones(8, dtype=torch.bool), _always(True),
                    input_bounds=None, step_size=0.05, max_steps=6)
    assert (X_new - X).abs().max() <= EPS + 1e-6
    assert X_new.min() < 0 or X_new.max() > 1


def test_dsc_moves_only_flagged_rows(module, batch):
    X, y = batch
    X_orig = X.clone()
    flagged = torch.tensor([True, False, True, False, False, True, False, False])
    X_new, n_steps = _dsc(module, X, y, flagged, _always(True))
    assert n_steps == 5
    assert torch.equal(X_new[~flagged], X[~flagged])
    assert ((X_new[flagged] - X[flagged]).abs().amax(dim=1) > 0).all()
    assert torch.equal(X, X_orig)  # input not modified in place


def test_dsc_rows_that_leave_the_gate_stop_moving(module, batch):
    X, y = batch
    flagged = torch.ones(8, dtype=torch.bool)
    released = torch.tensor([True, True, False, False, False, False, False, False])
    seen = []

    def still_flagged(X_rows, y_rows, logits):
        seen.append(len(X_rows))
        return y_rows == 2  # rows 0 and 1 (labels 0 and 1) are released

    y = torch.tensor([0, 1, 2, 2, 2, 2, 2, 2])
    X_new, n_steps = _dsc(module, X, y, flagged, still_flagged, max_steps=4)
    assert n_steps == 4
    assert seen == [8, 6, 6]  # released rows leave the batch the model sees
    one_step = _one_signed_step(module, X, y, STEP, EPS, BOUNDS)
    torch.testing.assert_close(X_new[released], one_step[released])
    assert ((X_new[~released] - one_step[~released]).abs().amax(dim=1) > 0).any()


def test_dsc_on_flagged_rows_equals_stepping_the_whole_batch(module, batch):
    X, y = batch
    flagged = torch.tensor([True, False, True, True, False, False, True, False])
    X_new, n_steps = _dsc(module, X, y, flagged, _always(True), max_steps=4)
    X_full = X
    for _ in range(4):
        X_full = torch.where(flagged.unsqueeze(1),
                             _one_signed_step(module, X_full, y, STEP, EPS, BOUNDS), X_full)
        X_full = project(X_full, X, EPS, BOUNDS)
    assert n_steps == 4
    torch.testing.assert_close(X_new, X_full)


def test_dsc_stops_early_when_nothing_is_still_flagged(module, batch):
    X, y = batch
    calls = []

    def still_flagged(X_corrected, y_rows, logits):
        calls.append(X_corrected.clone())
        torch.testing.assert_close(logits, module(X_corrected).detach())
        return torch.zeros(len(X_corrected), dtype=torch.bool)

    X_new, n_steps = _dsc(module, X, y, torch.ones(8, dtype=torch.bool), still_flagged,
                          max_steps=10)
    assert n_steps == 1
    assert len(calls) == 1
    torch.testing.assert_close(X_new, _one_signed_step(module, X, y, STEP, EPS, BOUNDS))


def test_dsc_takes_no_step_when_nothing_is_flagged(module, batch):
    X, y = batch

    def still_flagged(X_corrected, y_rows, logits):
        raise AssertionError("the gate is not re-applied when nothing is flagged")

    X_new, n_steps = _dsc(module, X, y, torch.zeros(8, dtype=torch.bool), still_flagged)
    assert n_steps == 0
    assert torch.equal(X_new, X)


def test_dsc_counts_steps_until_gate_releases(module, batch):
    X, y = batch
    calls = []

    def still_flagged(X_corrected, y_rows, logits):
        calls.append(1)
        return torch.full((len(X_corrected),), len(calls) < 3)

    _, n_steps = _dsc(module, X, y, torch.ones(8, dtype=torch.bool), still_flagged,
                      max_steps=10)
    assert n_steps == 3


def test_dsc_lowers_cross_entropy_of_moved_rows(module, batch):
    X, y = batch
    flagged = torch.tensor([True, True, True, True, False, False, True, True])
    X_new, _ = _dsc(module, X, y, flagged, _always(True), input_bounds=None,
                    step_size=0.01, max_steps=3)
    before, after = _row_loss(module, X, y), _row_loss(module, X_new, y)
    assert (after[flagged] < before[flagged]).all()
    torch.testing.assert_close(after[~flagged], before[~flagged])


@pytest.mark.parametrize("training", [True, False])
def test_dsc_leaves_module_state_unchanged(module, batch, training):
    X, y = batch
    module.train(training)
    for p in module.parameters():
        p.grad = torch.randn_like(p)
    params = [p.detach().clone() for p in module.parameters()]
    grads = [p.grad.clone() for p in module.parameters()]
    _dsc(module, X, y, torch.ones(8, dtype=torch.bool), _always(True))
    assert module.training is training
    for p, before, grad in zip(module.parameters(), params, grads):
        assert torch.equal(p, before)
        assert torch.equal(p.grad, grad)


def test_dsc_leaves_none_gradients_none(module, batch):
    X, y = batch
    _dsc(module, X, y, torch.ones(8, dtype=torch.bool), _always(True))
    assert all(p.grad is None for p in module.parameters())


def test_corrections_evaluate_the_module_in_eval_mode(batch):
    X, y = batch
    recorder = ModeRecorder().train()
    _dsc(recorder, X, y, torch.ones(8, dtype=torch.bool), _always(True), max_steps=2)
    loss_descent(recorder, X, y, epsilon=EPS, step_size=STEP, max_steps=2)
    adversarial_examples(recorder, X, y, epsilon=EPS, step_size=STEP, max_steps=2)
    assert recorder.seen_modes and not any(recorder.seen_modes)
    assert recorder.training


def test_dsc_reverts_rows_with_nan_logits(batch):
    X, y = batch
    X = X.clone()
    X[2, 0] = 50.0
    model = NaNForMarkedRows()
    X_new, n_steps = _dsc(model, X, y, torch.ones(8, dtype=torch.bool), _always(True),
                          input_bounds=None)
    assert n_steps == 5
    assert torch.isfinite(X_new).all()
    assert torch.equal(X_new[2], X[2])
    others = torch.arange(8) != 2
    assert ((X_new[others] - X[others]).abs().amax(dim=1) > 0).all()


def test_dsc_reverts_rows_made_non_finite_by_the_gate(module, batch):
    X, y = batch
    X_orig = X.clone()

    def still_flagged(X_corrected, y_rows, logits):
        X_corrected[3] = math.nan  # a misbehaving gate writes into the batch
        return torch.ones(len(X_corrected), dtype=torch.bool)

    X_new, _ = _dsc(module, X, y, torch.ones(8, dtype=torch.bool), still_flagged)
    assert torch.isfinite(X_new).all()
    assert torch.equal(X_new[3], X[3])
    assert torch.equal(X, X_orig)


def test_nan_logits_give_finite_rows_in_the_ball(batch):
    X, y = batch
    X = X + 20.0  # every row marked
    model = NaNForMarkedRows()
    X_descent, _ = loss_descent(model, X, y, epsilon=EPS, step_size=STEP, max_steps=2)
    assert torch.equal(X_descent, X)
    gen = torch.Generator().manual_seed(0)
    X_adv, _ = adversarial_examples(model, X, y, epsilon=EPS, step_size=STEP, max_steps=2,
                                    generator=gen)
    assert torch.isfinite(X_adv).all()
    assert (X_adv - X).abs().max() <= EPS + 1e-6


@pytest.mark.parametrize("function", [loss_descent, adversarial_examples])
def test_non_finite_rows_are_reverted_to_the_input(module, batch, function):
    X, y = batch
    # A NaN step size makes every moved row NaN; the projection keeps NaN.
    X_new, _ = function(module, X, y, epsilon=EPS, step_size=math.nan, max_steps=2,
                        input_bounds=BOUNDS)
    assert torch.equal(X_new, X)


def test_loss_descent_always_takes_max_steps_and_lowers_loss(module, batch):
    X, y = batch
    X_new, n_steps = loss_descent(module, X, y, epsilon=EPS, step_size=0.01, max_steps=4)
    assert n_steps == 4
    before, after = _row_loss(module, X, y), _row_loss(module, X_new, y)
    assert (after < before).all()
    assert ((X_new - X).abs().amax(dim=1) > 0).all()
    assert (X_new - X).abs().max() <= EPS + 1e-6


def test_loss_descent_respects_bounds(module, batch):
    X, y = batch
    X_new, _ = loss_descent(module, X, y, epsilon=0.5, step_size=0.2, max_steps=5,
                            input_bounds=BOUNDS)
    assert X_new.min() >= 0 and X_new.max() <= 1
    assert (X_new - X).abs().max() <= 0.5 + 1e-6


def test_adversarial_examples_raise_loss_and_stay_in_ball(module, batch):
    X, y = batch
    gen = torch.Generator().manual_seed(0)
    X_adv, n_steps = adversarial_examples(module, X, y, epsilon=EPS, step_size=0.03,
                                          max_steps=5, input_bounds=BOUNDS, generator=gen)
    assert n_steps == 5
    assert (X_adv - X).abs().max() <= EPS + 1e-6
    assert X_adv.min() >= 0 and X_adv.max() <= 1
    before, after = _row_loss(module, X, y), _row_loss(module, X_adv, y)
    assert (after > before).all()


def test_adversarial_examples_reproducible_with_seeded_generator(module, batch):
    X, y = batch

    def run(seed):
        gen = torch.Generator().manual_seed(seed)
        return adversarial_examples(module, X, y, epsilon=EPS, step_size=0.01,
                                    max_steps=1, generator=gen)[0]

    state = torch.get_rng_state()
    first, second = run(7), run(7)
    assert torch.equal(torch.get_rng_state(), state)  # global RNG untouched
    assert torch.equal(first, second)
    assert not torch.equal(first, run(8))


def test_adversarial_examples_random_start_with_zero_steps(module, batch):
    X, y = batch
    gen = torch.Generator().manual_seed(0)
    X_start, n_steps = adversarial_examples(module, X, y, epsilon=EPS, step_size=STEP,
                                            max_steps=0, generator=gen)
    assert n_steps == 0
    assert (X_start - X).abs().max() <= EPS + 1e-6
    assert (X_start != X).float().mean() > 0.9
