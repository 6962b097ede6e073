"""scikit-learn's estimator checks for both public estimators."""

from sklearn.utils.estimator_checks import parametrize_with_checks

from dsc_sklearn import DiscrepancyAwareOnlineClassifier, MemorizationDiscrepancyScorer


@parametrize_with_checks(
    [
        DiscrepancyAwareOnlineClassifier(),
        MemorizationDiscrepancyScorer(DiscrepancyAwareOnlineClassifier()),
        MemorizationDiscrepancyScorer(),
    ]
)
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)
