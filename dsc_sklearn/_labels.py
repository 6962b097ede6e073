"""Labels as the training step sees them: the one encoding of the library."""

import numpy as np

__all__ = ["encode_labels"]


def encode_labels(classes, y, *, name="y", hint=""):
    """``y`` as the positions of its labels in the sorted ``classes``.

    Parameters
    ----------
    classes : array-like of shape (n_classes,)
        The known labels, sorted (an estimator's ``classes_``).
    y : array-like of shape (n_samples,)
        Labels to encode.
    name : str, default="y"
        What ``y`` is called in the error message.
    hint : str, default=""
        How to fix an unknown label, appended to the error message.

    Returns
    -------
    codes : ndarray of int64, shape (n_samples,)

    Raises
    ------
    ValueError
        When a label of ``y`` is not in ``classes``; the message names it.

    Examples
    --------
    >>> from dsc_sklearn._labels import encode_labels
    >>> encode_labels(["ant", "bee", "cat"], ["cat", "ant"]).tolist()
    [2, 0]
    >>> encode_labels([0, 1], [1, 2])
    Traceback (most recent call last):
        ...
    ValueError: y holds labels [2] that are not among the classes [0, 1].
    >>> import numpy as np
    >>> encode_labels(np.array(["a", "b"], dtype=object), np.array(["a", 1], dtype=object))
    Traceback (most recent call last):
        ...
    ValueError: y holds labels [1] that are not among the classes ['a', 'b'].
    """
    classes, y = np.asarray(classes), np.asarray(y)
    if not len(classes):
        codes, known = np.zeros(len(y), np.int64), np.zeros(len(y), bool)
    else:
        try:
            codes = np.searchsorted(classes, y).clip(0, len(classes) - 1)
            known = np.asarray(classes.take(codes, mode="clip") == y, dtype=bool)
        except TypeError:  # labels of types that do not sort together: one by one
            position = {label: i for i, label in enumerate(classes.tolist())}
            found = [position.get(label) for label in y.tolist()]
            known = np.array([i is not None for i in found], dtype=bool)
            codes = np.array([i or 0 for i in found], dtype=np.int64)
    if not known.all():
        unknown = sorted(set(y[~known].tolist()), key=str)
        raise ValueError(f"{name} holds labels {unknown} that are not among the classes "
                         f"{classes.tolist()}.{' ' + hint if hint else ''}")
    return codes.astype(np.int64)
