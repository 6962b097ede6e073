"""Adapters that let other streaming libraries drive the defended classifier.

- :mod:`dsc_sklearn.integrations.river`: :class:`~dsc_sklearn.integrations.river.RiverClassifier`,
  a `river <https://riverml.xyz>`_ mini-batch classifier (needs the
  ``river`` extra: ``pip install "dsc-sklearn[river]"``).
"""

__all__ = []
