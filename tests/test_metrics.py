"""evaluation.metrics against hand-computed cases (the paper's per-image definitions)."""
import numpy as np
import pytest

from evaluation import metrics


def multi_hot(tag_sets, num_tags):
    labels = np.zeros((len(tag_sets), num_tags), dtype=np.float32)
    for row, tags in enumerate(tag_sets):
        labels[row, list(tags)] = 1
    return labels


def test_image_with_fewer_true_tags_than_k():
    # Ranking 0, 2, 3, 4, 1; true tags {0, 3} sit at ranks 1 and 3.
    scores = np.array([[0.9, 0.1, 0.8, 0.3, 0.2]])
    result = metrics.evaluate(scores, multi_hot([{0, 3}], 5), top_k=(1, 3, 5))
    assert result["precision@1"] == pytest.approx(1.0)
    assert result["recall@1"] == pytest.approx(0.5)
    assert result["f1@1"] == pytest.approx(2 / 3)
    assert result["precision@3"] == pytest.approx(2 / 3)
    assert result["recall@3"] == pytest.approx(1.0)
    assert result["f1@3"] == pytest.approx(0.8)
    # Only 2 true tags, yet P@5 divides by 5.
    assert result["precision@5"] == pytest.approx(2 / 5)
    assert result["recall@5"] == pytest.approx(1.0)
    assert result["accuracy@5"] == 1.0
    assert result["map"] == pytest.approx((1 / 1 + 2 / 3) / 2)


def test_image_whose_true_tags_are_all_outside_the_top_k():
    scores = np.array([[0.5, 0.1, 0.4, 0.3, 0.2]])  # tag 1 is ranked last
    result = metrics.evaluate(scores, multi_hot([{1}], 5), top_k=(1, 3, 5))
    for name in ("precision", "recall", "accuracy", "f1"):
        assert result[f"{name}@1"] == 0.0
        assert result[f"{name}@3"] == 0.0
    assert result["precision@5"] == pytest.approx(1 / 5)
    assert result["recall@5"] == pytest.approx(1.0)
    assert result["map"] == pytest.approx(1 / 5)


def test_equal_scores_rank_the_lower_tag_id_first():
    # Tags 1 and 2 tie for first place: tag 1 is ranked first, tag 2 second.
    scores = np.array([[0.2, 0.7, 0.7, 0.1]])
    assert metrics.rank_tags(scores).tolist() == [[1, 2, 0, 3]]
    result = metrics.evaluate(scores, multi_hot([{2}], 4), top_k=(1, 2))
    assert result["precision@1"] == 0.0
    assert result["accuracy@2"] == 1.0
    assert result["precision@2"] == pytest.approx(1 / 2)
    assert result["map"] == pytest.approx(1 / 2)
    # A constant score (an untrained model) is the ranking 0, 1, 2, ...
    flat = metrics.evaluate(np.full((1, 5), 0.5), multi_hot([{1, 2}], 5), top_k=(1, 3))
    assert flat["precision@1"] == 0.0
    assert flat["precision@3"] == pytest.approx(2 / 3)
    assert flat["map"] == pytest.approx((1 / 2 + 2 / 3) / 2)


def test_k_larger_than_the_vocabulary_ranks_every_tag_and_divides_by_k():
    scores = np.array([[0.1, 0.2, 0.3]])
    result = metrics.evaluate(scores, multi_hot([{0, 2}], 3), top_k=(10,))
    assert result["precision@10"] == pytest.approx(2 / 10)
    assert result["recall@10"] == pytest.approx(1.0)
    assert result["accuracy@10"] == 1.0
    assert result["f1@10"] == pytest.approx(2 * 0.2 * 1.0 / 1.2)
    assert result["micro_recall@10"] == pytest.approx(1.0)


def test_averages_over_images_and_micro_recall_over_all_true_tags():
    scores = np.array([[0.9, 0.1, 0.8, 0.3, 0.2],    # true {0, 3}: hit at rank 1
                       [0.5, 0.1, 0.4, 0.3, 0.2]])   # true {1}: ranked last
    result = metrics.evaluate(scores, multi_hot([{0, 3}, {1}], 5), top_k=(1,))
    assert result["precision@1"] == pytest.approx(0.5)
    assert result["accuracy@1"] == pytest.approx(0.5)
    assert result["recall@1"] == pytest.approx((1 / 2 + 0) / 2)
    assert result["micro_recall@1"] == pytest.approx(1 / 3)
    assert result["map"] == pytest.approx(((1 + 2 / 3) / 2 + 1 / 5) / 2)
    assert sorted(result) == sorted(["precision@1", "recall@1", "accuracy@1", "f1@1",
                                     "map", "label_map", "micro_recall@1"])


def test_label_map_ranks_images_per_tag_and_skips_tags_without_positives():
    scores = np.array([[0.9, 0.1, 0.5],
                       [0.2, 0.8, 0.5],
                       [0.5, 0.3, 0.5]])
    labels = multi_hot([{0}, {}, {0, 1}], 3)
    # Tag 0: images ranked 0 (0.9), 2 (0.5), 1 (0.2); hits 1, 1, 0 -> AP 1.
    # Tag 1: images ranked 1 (0.8), 2 (0.3), 0 (0.1); hit at rank 2 -> AP 1/2.
    # Tag 2: no positive, left out. Image 1 has no true tag: a negative for every tag here, but
    # left out of the per-image averages.
    ap = metrics.per_tag_average_precision(scores, labels)
    assert ap[:2] == pytest.approx([1.0, 0.5])
    assert np.isnan(ap[2])
    result = metrics.evaluate(scores, labels, top_k=(1,))
    assert result["label_map"] == pytest.approx(0.75)
    assert metrics.images_with_tags(labels) == 2
    # Image 0 ranks tag 0 first (hit); image 2 ranks tags 0 and 2 equal, tag 0 first (hit).
    assert result["precision@1"] == pytest.approx(1.0)
    assert result["recall@1"] == pytest.approx((1 + 1 / 2) / 2)


def test_per_tag_counts_at_the_top_k_decision():
    scores = np.array([[0.9, 0.8, 0.1],
                       [0.7, 0.2, 0.6],
                       [0.1, 0.9, 0.3]])
    labels = multi_hot([{0}, {2}, {0, 2}], 3)
    # Top 1 per image: tag 0, tag 0, tag 1.
    stats = metrics.per_tag_at_k(scores, labels, k=1)
    assert stats["support"].tolist() == [2, 0, 2]
    assert stats["predicted"].tolist() == [2, 1, 0]
    assert stats["correct"].tolist() == [1, 0, 0]
    assert stats["precision"][:2] == pytest.approx([0.5, 0.0])
    assert np.isnan(stats["precision"][2])  # never predicted
    assert stats["recall"][0] == pytest.approx(0.5)
    assert np.isnan(stats["recall"][1])  # no positive
    assert stats["recall"][2] == 0.0


def test_popularity_baseline_predicts_the_most_frequent_train_tags_for_every_image():
    # Train counts: tag 0 once, tags 1 and 2 three times (tie: lower id first), tag 3 twice.
    train = multi_hot([{1, 2}, {1, 2, 3}, {0, 1, 2, 3}], 4)
    counts = train.sum(axis=0)
    assert counts.tolist() == [1, 3, 3, 2]
    scores = metrics.popularity_scores(counts, num_images=2)
    assert metrics.rank_tags(scores).tolist() == [[1, 2, 3, 0], [1, 2, 3, 0]]
    result = metrics.evaluate(scores, multi_hot([{2}, {0, 1}], 4), top_k=(1, 2, 3))
    assert result["precision@1"] == pytest.approx((0 + 1) / 2)
    assert result["recall@1"] == pytest.approx((0 + 1 / 2) / 2)
    assert result["recall@2"] == pytest.approx((1 + 1 / 2) / 2)
    assert result["precision@3"] == pytest.approx((1 / 3 + 1 / 3) / 2)
    assert result["map"] == pytest.approx((1 / 2 + (1 + 2 / 4) / 2) / 2)


def reference_metrics(scores, labels, k):
    """A deliberately plain per-image loop over the paper's set definitions."""
    values = {"precision": [], "recall": [], "accuracy": [], "ap": []}
    for row_scores, row_labels in zip(scores, labels):
        truth = set(np.flatnonzero(row_labels))
        if not truth:
            continue
        ranked = sorted(range(len(row_scores)), key=lambda tag: (-row_scores[tag], tag))
        hits = len(set(ranked[:k]) & truth)
        values["precision"].append(hits / k)
        values["recall"].append(hits / len(truth))
        values["accuracy"].append(float(hits > 0))
        found, precisions = 0, []
        for rank, tag in enumerate(ranked, start=1):
            if tag in truth:
                found += 1
                precisions.append(found / rank)
        values["ap"].append(np.mean(precisions))
    return {name: np.mean(value) for name, value in values.items()}


def test_vectorised_metrics_match_a_plain_loop_on_random_data_with_ties():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 6, size=(200, 30)).astype(np.float32)  # many ties
    labels = rng.random((200, 30)) < 0.12
    labels[0] = False  # an image without tags is left out, as in the reference
    result = metrics.evaluate(scores, labels, top_k=(1, 5, 40))
    for k in (1, 5, 40):
        expected = reference_metrics(scores, labels, k)
        for name in ("precision", "recall", "accuracy"):
            assert result[f"{name}@{k}"] == pytest.approx(expected[name])
    assert result["map"] == pytest.approx(expected["ap"])


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError, match="same"):
        metrics.evaluate(np.zeros((2, 3)), np.zeros((2, 4)))
    with pytest.raises(ValueError, match="NaN"):
        metrics.evaluate(np.array([[np.nan, 1.0]]), np.array([[1, 0]]))
    with pytest.raises(ValueError, match="no image"):
        metrics.evaluate(np.zeros((2, 3)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="k must be"):
        metrics.evaluate(np.zeros((1, 3)), np.ones((1, 3)), top_k=(0,))
