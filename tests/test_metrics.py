"""lwdc.metrics against scikit-learn: random cases (hypothesis) and the hand-made edge cases (ties, one class
absent, perfect and inverted classifiers, a class never predicted)."""
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from lwdc import metrics

sk = pytest.importorskip("sklearn.metrics")


def _sk_detection(scores, labels, threshold):
    pred = (np.asarray(scores) >= threshold).astype(int)
    tn, fp, fn, tp = sk.confusion_matrix(labels, pred, labels=[0, 1]).ravel()
    return {"sensitivity": sk.recall_score(labels, pred, zero_division=0),
            "specificity": tn / (tn + fp) if tn + fp else 0.0,
            "precision": sk.precision_score(labels, pred, zero_division=0),
            "f1": sk.f1_score(labels, pred, zero_division=0),
            "accuracy": 100 * sk.accuracy_score(labels, pred)}


binary_cases = st.integers(2, 60).flatmap(lambda n: st.tuples(
    st.lists(st.integers(0, 6).map(lambda v: v / 6), min_size=n, max_size=n),   # coarse: many ties
    st.lists(st.integers(0, 1), min_size=n, max_size=n)))


@settings(max_examples=60, deadline=None)
@given(binary_cases)
def test_binary_metrics_match_sklearn(case):
    scores, labels = np.array(case[0]), np.array(case[1])
    both = 0 < labels.sum() < len(labels)
    auc = metrics.roc_auc(scores, labels)
    if both:
        assert auc == pytest.approx(sk.roc_auc_score(labels, scores))
        fpr, tpr, thr = metrics.roc_curve(scores, labels)
        f2, t2, th2 = sk.roc_curve(labels, scores, drop_intermediate=False)
        np.testing.assert_allclose(fpr, f2)
        np.testing.assert_allclose(tpr, t2)
        np.testing.assert_allclose(thr[1:], th2[1:])
        j, t = metrics.youden(scores, labels)
        assert j == pytest.approx(float(np.max(t2 - f2)))
    else:
        assert math.isnan(auc)
    for threshold in (0.0, 0.5, 1.0):
        got = metrics.detection_metrics(scores, labels, threshold=threshold)
        for key, want in _sk_detection(scores, labels, threshold).items():
            assert got[key] == pytest.approx(want), key


@settings(max_examples=40, deadline=None)
@pytest.mark.filterwarnings("ignore:y_pred contains classes")
@given(st.integers(3, 50), st.integers(2, 5), st.integers(0, 10_000))
def test_multiclass_metrics_match_sklearn(n, k, seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    prob = rng.dirichlet(np.ones(k), n)
    got = metrics.multiclass_metrics(prob, labels, k)
    pred = prob.argmax(1)
    assert got["accuracy"] == pytest.approx(100 * sk.accuracy_score(labels, pred))
    assert got["balanced_accuracy"] == pytest.approx(100 * sk.balanced_accuracy_score(labels, pred))
    assert got["macro_f1"] == pytest.approx(sk.f1_score(labels, pred, average="macro", labels=list(range(k)),
                                                        zero_division=0))
    np.testing.assert_array_equal(got["confusion"], sk.confusion_matrix(labels, pred, labels=list(range(k))))
    present = np.unique(labels)
    if len(present) >= 2:
        want = np.mean([sk.roc_auc_score(labels == c, prob[:, c]) for c in present])
        assert got["auc"] == pytest.approx(want)
    else:
        assert math.isnan(got["auc"])


def test_hand_made_cases():
    # perfect, inverted and constant classifiers
    y = np.array([0, 0, 1, 1])
    assert metrics.roc_auc([0.1, 0.2, 0.8, 0.9], y) == 1.0
    assert metrics.roc_auc([0.9, 0.8, 0.2, 0.1], y) == 0.0
    assert metrics.roc_auc([0.5] * 4, y) == 0.5
    assert metrics.youden([0.1, 0.2, 0.8, 0.9], y) == (1.0, 0.8)
    # one class absent: AUC NaN, J 0 at +inf, rates still defined
    m = metrics.detection_metrics([0.2, 0.7], [0, 0])
    assert math.isnan(m["auc"]) and m["youden_j"] == 0.0 and m["threshold"] == math.inf
    assert m["specificity"] == 1.0 and m["sensitivity"] == 0.0 and m["precision"] == 0.0
    # ties across classes count half
    assert metrics.roc_auc([0.5, 0.5, 0.9], [0, 1, 1]) == pytest.approx(0.75)
    # a 1:5 "never fires" detector: 83% accurate, 50% balanced
    m = metrics.detection_metrics(np.zeros(6), [1, 0, 0, 0, 0, 0], threshold=0.5)
    assert m["accuracy"] == pytest.approx(100 * 5 / 6) and m["balanced_accuracy"] == 50.0
    # a class never predicted in multi-class
    prob = np.array([[0.9, 0.1, 0.0], [0.8, 0.2, 0.0], [0.1, 0.9, 0.0]])
    got = metrics.multiclass_metrics(prob, [0, 2, 1], 3)
    assert got["per_class"]["recall"] == [1.0, 1.0, 0.0] and got["per_class"]["precision"][2] == 0.0


def test_clinical_binary_keeps_argmax_accuracy():
    logits = np.array([[2.0, 0.0], [0.0, 1.0], [1.0, 0.5], [0.9, 0.0]])
    labels = np.array([0, 1, 1, 0])
    m = metrics.clinical_metrics(logits, labels)
    assert m["accuracy"] == 75.0                  # argmax: the third sample is missed
    assert m["accuracy_at_threshold"] == 100.0    # Youden's threshold separates them
    assert m["auc"] == 1.0 and m["sensitivity"] == 1.0


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="labels 0"):
        metrics.roc_auc([0.1, 0.2], [0, 2])
    with pytest.raises(ValueError, match="NaN"):
        metrics.roc_auc([math.nan, 0.2], [0, 1])
    with pytest.raises(ValueError, match="differ in length"):
        metrics.confusion_matrix([0, 1], [0], 2)
