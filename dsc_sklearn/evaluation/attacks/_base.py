"""The base class of the attacks, their parameter checks and the stream's random state."""

import numbers

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval

from ...defence._constraints import NumberInterval
from ._victim import _as_float_array

#: The objectives of the accumulative attack's stream batches.
_OBJECTIVES = ("reg", "second", "normal")

#: Constraints shared by the attacks that perturb inputs within an L-inf ball.
_BUDGET_CONSTRAINTS = {
    "epsilon": [Interval(numbers.Real, 0, None, closed="left")],
    "n_steps": [NumberInterval(numbers.Integral, 1, None, closed="left")],
    "step_size": [None, Interval(numbers.Real, 0, None, closed="neither")],
    "poison_fraction": [Interval(numbers.Real, 0, 1, closed="right")],
    "input_bounds": [None, tuple, list],
    "random_state": ["random_state"],
}


class PoisoningAttack(BaseEstimator):
    """Base class of the poisoning attacks the stream protocol runs.

    An attack is a scikit-learn estimator whose parameters are its
    configuration (validated by ``_parameter_constraints`` at each call),
    with two methods the protocol calls, each given the victim (a fitted
    estimator it reads and never changes):

    - ``craft_trigger(estimator, X_trigger, y_trigger, X_val, y_val)``: the
      trigger batch to feed at the end;
    - ``poison_batch(estimator, X, y, X_trigger, y_trigger, X_val, y_val)``:
      a stream batch to feed instead of ``(X, y)``, as ``(X_fed,
      is_poison)``, or ``(X_fed, y_fed, is_poison)`` when it changes labels.

    Class attributes describe it to the protocol, the benchmark and the
    report; :data:`~dsc_sklearn.evaluation.attacks.ATTACK_REGISTRY` names
    the registered ones.

    Attributes
    ----------
    name : str or None
        The attack's name in the registry, the protocol's ``attack=`` and the
        command line's ``--attacks``.
    legend : str
        What it does, for the report's legends and ``--list``.
    adapts : bool
        Whether it knows the defence and keeps its poison inside what the
        defence accepts.
    adaptive_set : bool
        Whether ``--attacks adaptive`` runs it and the "Adaptive attacks"
        table shows it (the adaptive attacks and the baselines that plan
        nothing ahead).
    plain_training_only : bool
        Whether it is a baseline of the accumulative attack, run against
        plain training only.
    poisons_stream, poisons_trigger : bool
        Whether the protocol feeds :meth:`poison_batch`'s batches and
        :meth:`craft_trigger`'s trigger (else the clean ones).
    uses_protocol_budget : bool
        Whether the protocol's ``epsilon`` sets the attack's budget (an
        attack with a budget of its own keeps it).

    Examples
    --------
    >>> import numpy as np
    >>> from dsc_sklearn.evaluation.attacks import PoisoningAttack
    >>> class ZeroRows(PoisoningAttack):
    ...     name = "zero_rows"
    ...     legend = "every stream row set to 0"
    ...     poisons_trigger = False
    ...     def poison_batch(self, estimator, X, y, *args):
    ...         return np.zeros_like(X, dtype=np.float32), np.ones(len(X), dtype=bool)
    >>> X_fed, is_poison = ZeroRows().poison_batch(None, np.ones((2, 3)), [0, 1])
    >>> X_fed.sum(), is_poison.all()
    (np.float32(0.0), np.True_)
    """

    name = None
    legend = ""
    adapts = False
    adaptive_set = False
    plain_training_only = False
    poisons_stream = True
    poisons_trigger = True
    uses_protocol_budget = True
    _parameter_constraints: dict = {}

    def craft_trigger(self, estimator, X_trigger, y_trigger, X_val, y_val):
        """The trigger batch to feed: by default the clean one, as a float32 copy.

        Parameters
        ----------
        estimator : object
            The fitted victim.
        X_trigger : array-like of shape (n_trigger, n_features)
            Trigger inputs.
        y_trigger, X_val, y_val : array-like
            Trigger labels and the validation batch whose loss the attacker
            wants to raise.

        Returns
        -------
        X_trigger : ndarray of shape (n_trigger, n_features), dtype float32
        """
        return np.array(_as_float_array(X_trigger, "X_trigger"), dtype=np.float32, copy=True)

    def poison_batch(self, estimator, X, y, X_trigger=None, y_trigger=None, X_val=None,
                     y_val=None):
        """The stream batch to feed: by default the clean one, nothing poisoned.

        Parameters
        ----------
        estimator : object
            The fitted victim.
        X, y : array-like
            The clean stream batch.
        X_trigger, y_trigger, X_val, y_val : array-like, default=None
            The trigger and validation batches, for attacks that plan.

        Returns
        -------
        X_fed : ndarray of shape (n_samples, n_features), dtype float32
        is_poison : ndarray of shape (n_samples,), dtype bool
        """
        X = np.array(_as_float_array(X, "X"), dtype=np.float32, copy=True)
        return X, np.zeros(len(X), dtype=bool)


def _invalid(owner, name, expected, value):
    return ValueError(
        f"The {name!r} parameter of {type(owner).__name__} must be {expected}. "
        f"Got {value!r} instead."
    )


def _is_real(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _check_input_bounds(owner, value):
    """``None`` or the pair ``(low, high)`` as floats; refused unless ``low < high``."""
    if value is None:
        return None
    expected = "None or a pair (low, high) of floats with low < high"
    try:
        low, high = value
    except (TypeError, ValueError):
        raise _invalid(owner, "input_bounds", expected, value) from None
    if not (_is_real(low) and _is_real(high)) or not low < high:
        raise _invalid(owner, "input_bounds", expected, value)
    return float(low), float(high)


class _StreamRandomMixin:
    """Draws one generator from ``random_state`` and advances it across calls.

    ``set_params(random_state=...)`` (and :func:`sklearn.base.clone`) restart it.
    """

    def _generator(self):
        if getattr(self, "_rng_source", _StreamRandomMixin) is not self.random_state:
            self._rng = check_random_state(self.random_state)
            self._rng_source = self.random_state
        return self._rng

    def set_params(self, **params):
        if "random_state" in params:
            self.__dict__.pop("_rng_source", None)
        return super().set_params(**params)

    def _draw_rows(self, n_samples, fraction):
        """``fraction`` of ``n_samples`` row indices (at least one), drawn without replacement."""
        n_drawn = min(n_samples, max(1, round(fraction * n_samples)))
        return self._generator().choice(n_samples, size=n_drawn, replace=False)


class _BudgetAttack(_StreamRandomMixin, PoisoningAttack):
    """An attack that perturbs ``poison_fraction`` of each batch by signed steps in an L-inf ball.

    Its parameters are documented by its subclasses, such as
    :class:`GradientAscentAttack`.
    """

    _parameter_constraints = _BUDGET_CONSTRAINTS

    def __init__(self, *, epsilon=0.2, n_steps=2, step_size=None, poison_fraction=1.0,
                 input_bounds=(0.0, 1.0), random_state=None):
        self.epsilon = epsilon
        self.n_steps = n_steps
        self.step_size = step_size
        self.poison_fraction = poison_fraction
        self.input_bounds = input_bounds
        self.random_state = random_state

    def _check_params(self):
        """Validate the parameters; return ``(epsilon, step_size, input_bounds)``."""
        self._validate_params()
        bounds = _check_input_bounds(self, self.input_bounds)
        step_size = 2 * self.epsilon / self.n_steps if self.step_size is None else self.step_size
        return float(self.epsilon), float(step_size), bounds

    def _poisoned_rows(self, n_samples):
        """Mask of the rows to perturb: all, or ``poison_fraction`` of them drawn at random."""
        is_poison = np.ones(n_samples, dtype=bool)
        if self.poison_fraction < 1:
            is_poison[:] = False
            is_poison[self._draw_rows(n_samples, self.poison_fraction)] = True
        return is_poison
