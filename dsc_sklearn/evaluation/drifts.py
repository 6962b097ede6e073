"""The benign drifts the benchmark runs: one registry.

A benign drift is a change of the world the defence must follow, not
refuse: the inputs of a clean stream drift (:func:`apply_drift`: noise,
brightness, translation, on the image and signal data sets), or a river
generator's concept drifts as the generator defines it (``"concept"``).
:data:`DRIFT_REGISTRY` says which drift fits which data set;
:func:`~dsc_sklearn.evaluation.protocol.run_drift_protocol` and
:func:`~dsc_sklearn.evaluation.protocol.run_concept_drift_protocol` run
them.
"""

from dataclasses import dataclass
from typing import Optional

import numpy as np
from sklearn.utils import check_random_state

from .datasets import DRIFT_STREAMS, RIVER_DATASETS

__all__ = [
    "CONCEPT_DRIFT",
    "DRIFTS",
    "DRIFT_REGISTRY",
    "Drift",
    "apply_drift",
    "drifts_for",
]


@dataclass(frozen=True)
class Drift:
    """A benign drift of the benchmark.

    Attributes
    ----------
    name : str
        Its name in ``--drifts`` and the records (``"drift-<name>"``).
    level : float or None
        The final strength of an input drift (reached gradually over the
        stream); ``None`` for a generator's own concept drift.
    description : str
        What it does, for ``--list`` and the legends.
    """

    name: str
    level: Optional[float]
    description: str

    @property
    def on_inputs(self):
        """bool: whether it drifts the inputs (:func:`apply_drift`), not the concept."""
        return self.level is not None

    def fits(self, dataset):
        """Whether the drift runs on data set ``dataset`` by default.

        Input drifts run on the image and signal data sets (digits,
        MNIST-1D, the synthetic set), the concept drift on river's drift
        generators; river's fixed data sets get none.
        """
        if not self.on_inputs:
            return dataset in DRIFT_STREAMS
        return dataset not in DRIFT_STREAMS + RIVER_DATASETS


#: The drift that is a drift generator's own concept drift.
CONCEPT_DRIFT = "concept"

#: Every benign drift, by name, in the order of the tables and ``--list``.
DRIFT_REGISTRY = {drift.name: drift for drift in (
    Drift("noise", 0.3, "Gaussian noise added to the inputs, its standard deviation "
                        "growing to the final level"),
    Drift("brightness", 0.3, "an offset added to every feature, growing to the final level"),
    Drift("translation", 2, "the images shifted by a number of pixels growing to the final "
                            "level"),
    Drift(CONCEPT_DRIFT, None, "the concept drift of river's generators themselves (their "
                               "benchmarks only)"),
)}

#: The input drifts of :func:`~dsc_sklearn.evaluation.protocol.run_drift_protocol`
#: and their default final strength: noise standard deviation, brightness
#: offset, translation in pixels.
DRIFTS = {name: drift.level for name, drift in DRIFT_REGISTRY.items() if drift.on_inputs}


def drifts_for(dataset):
    """The drifts that run on ``dataset`` by default, in registry order.

    Examples
    --------
    >>> from dsc_sklearn.evaluation.drifts import drifts_for
    >>> drifts_for("digits"), drifts_for("sea"), drifts_for("phishing")
    (('noise', 'brightness', 'translation'), ('concept',), ())
    """
    return tuple(name for name, drift in DRIFT_REGISTRY.items() if drift.fits(dataset))


def apply_drift(X, kind, level, *, image_shape=None, input_bounds=None, random_state=None):
    """Shift inputs by a benign drift of the given level.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
    kind : {"noise", "brightness", "translation"}
        Additive Gaussian noise of standard deviation ``level``, an offset
        of ``level`` on every feature, or a shift of ``round(level)``
        positions along the last image axis (zero-filled; the feature axis
        when ``image_shape`` is None).
    level : float
        Drift strength; 0 returns ``X`` unchanged.
    image_shape : tuple of int, default=None
        Shape one row reshapes into, for translations.
    input_bounds : tuple of (float, float), default=None
        Clamp the drifted inputs to this range.
    random_state : int, RandomState instance or None, default=None
        Seeds the noise.

    Returns
    -------
    X_drifted : ndarray of float32

    Examples
    --------
    >>> import numpy as np
    >>> from dsc_sklearn.evaluation.drifts import apply_drift
    >>> apply_drift(np.array([[0.0, 0.5, 1.0]]), "brightness", 0.2, input_bounds=(0, 1))
    array([[0.2, 0.7, 1. ]], dtype=float32)
    >>> apply_drift(np.array([[1.0, 2.0, 3.0]]), "translation", 1)
    array([[0., 1., 2.]], dtype=float32)
    """
    X = np.asarray(X, dtype=np.float32)
    if kind == "noise":
        rng = check_random_state(random_state)
        X = X + rng.normal(scale=level, size=X.shape).astype(np.float32)
    elif kind == "brightness":
        X = X + np.float32(level)
    elif kind == "translation":
        X = _translate(X, int(round(level)), image_shape)
    else:
        raise ValueError(f"kind must be one of {tuple(DRIFTS)}; got {kind!r}.")
    if input_bounds is not None:
        X = np.clip(X, *input_bounds)
    return X.astype(np.float32)


def _translate(X, shift, image_shape):
    if shift == 0:
        return X.copy()
    images = X.reshape(len(X), *(image_shape or (X.shape[1],)))
    moved = np.zeros_like(images)
    moved[..., shift:] = images[..., :-shift]
    return moved.reshape(len(X), -1)
