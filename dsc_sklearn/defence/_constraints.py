"""scikit-learn parameter constraints this library needs beyond scikit-learn's own.

They plug into ``_parameter_constraints`` (scikit-learn's
``validate_parameter_constraints`` accepts subclasses of its
:class:`~sklearn.utils._param_validation.Interval` and
:class:`~sklearn.utils._param_validation.Options`), so the errors keep
scikit-learn's form: "The 'name' parameter of Estimator must be ... Got
... instead."
"""

import numbers
import sys

import numpy as np
from sklearn.utils._param_validation import Interval, Options

__all__ = ["C_SIZE", "FLOAT32_MAX", "NumberInterval", "SequenceOf", "count", "size"]

#: The largest count or size that fits a C ``Py_ssize_t`` (and an int64):
#: deques, tensor dimensions and torch's integer arguments take no more.
C_SIZE = sys.maxsize
#: The largest float32: a step size or learning rate beyond it is infinite
#: once in a float32 tensor.
FLOAT32_MAX = float(np.finfo(np.float32).max)


class NumberInterval(Interval):
    """scikit-learn's :class:`Interval` constraint, refusing booleans.

    ``bool`` is an :class:`numbers.Integral` in Python, so ``Interval``
    admits ``threshold=True`` as the number 1; scikit-learn offers no
    constraint that excludes bools (its ``RealNotInt`` excludes every int).
    The message stays scikit-learn's: "must be a float in the range [0,
    inf)".
    """

    def is_satisfied_by(self, val):
        return not isinstance(val, (bool, np.bool_)) and super().is_satisfied_by(val)


def size(low=1):
    """An int from ``low`` to :data:`C_SIZE`, booleans refused."""
    return NumberInterval(numbers.Integral, low, C_SIZE, closed="both")


def count():
    """An int from 0 to :data:`C_SIZE`, booleans refused."""
    return size(0)


class SequenceOf(Options):
    """A tuple, list or 1-D array whose items each satisfy ``item``.

    Parameters
    ----------
    description : str
        What the error message says the value must be, e.g. "a tuple of
        positive int (the hidden layers' widths), e.g. (100,)".
    item : constraint or None, default=None
        A constraint each item must satisfy; ``None`` accepts any item.
    length : int or None, default=None
        The number of items, when fixed.

    Examples
    --------
    >>> from dsc_sklearn.defence._constraints import SequenceOf, size
    >>> widths = SequenceOf("a tuple of positive int", item=size())
    >>> widths.is_satisfied_by((100, 50)), widths.is_satisfied_by((0,))
    (True, False)
    """

    def __init__(self, description, item=None, length=None):
        super().__init__(object, set())
        self.description, self.item, self.length = description, item, length

    def is_satisfied_by(self, val):
        if isinstance(val, np.ndarray):
            if val.ndim != 1:
                return False
            val = val.tolist()
        return (isinstance(val, (tuple, list))
                and (self.length is None or len(val) == self.length)
                and (self.item is None or all(self.item.is_satisfied_by(v) for v in val)))

    def __str__(self):
        return self.description
