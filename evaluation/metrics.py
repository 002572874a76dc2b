"""Hashtag-recommendation metrics in plain numpy: the HARRISON paper's per-image definitions.

Inputs everywhere: `scores` float [N, T] (one row per image, one column per tag id) and `labels`
multi-hot [N, T] (bool, int or float; nonzero = the user wrote that tag).

Conventions, fixed so that numbers are reproducible and comparable between runs:
- Ranking: tags sorted by descending score; equal scores keep ascending tag id (a stable sort of
  -score), so the lower id (the more frequent tag, since vocab.txt is ordered by frequency) wins.
  NaN scores are rejected.
- R(k) for k larger than the vocabulary is the whole vocabulary; precision@k still divides by k,
  exactly as the paper's formula P@K = |R(K) ∩ GT| / K.
- Images without any true tag have no recall or AP; they are left out of every per-image average
  (`images_with_tags` says how many count) but stay negatives in `label_map`. HARRISON has no
  such image.
- AP of one ranking: the mean, over the relevant items, of the precision at each relevant item's
  rank (the standard non-interpolated AP; the full ranking is used, so every relevant item counts).
  `map` averages it over images (tags ranked per image), `label_map` over tags that have at least
  one positive image (images ranked per tag, ties keep ascending image index).
- micro_recall@k: top-k hits over all ground-truth tags of all images (what the seed's slim
  streaming recall reported), not a per-image average.
"""
import numpy as np

PER_IMAGE_METRICS = ("precision", "recall", "accuracy", "f1")


def _check(scores, labels):
    scores = np.asarray(scores)
    labels = np.asarray(labels) != 0
    if scores.ndim != 2 or scores.shape != labels.shape:
        raise ValueError(f"scores {scores.shape} and labels {labels.shape} must be the same [N, T]")
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN")
    return scores, labels


def rank_tags(scores):
    """Tag ids of each row by descending score, ties by ascending tag id: int [N, T]."""
    scores = np.asarray(scores)
    # A stable sort of -score keeps equal scores in id order. Negating in float64 is exact for
    # float32/float16 inputs and maps 0.0 and -0.0 to equal keys.
    return np.argsort(-scores.astype(np.float64, copy=False), axis=-1, kind="stable")


def hits_in_rank_order(labels, ranking):
    """bool [N, T]: whether the tag at each rank is a true tag."""
    return np.take_along_axis(np.asarray(labels) != 0, ranking, axis=-1)


def average_precision_of_hits(hits):
    """AP of each row of a bool [N, M] relevance-in-rank-order matrix; NaN for rows with no hit."""
    hits = np.asarray(hits, dtype=bool)
    cumulative = np.cumsum(hits, axis=-1, dtype=np.float64)
    precision_at_rank = cumulative / np.arange(1, hits.shape[-1] + 1)
    relevant = hits.sum(axis=-1)
    summed = np.where(hits, precision_at_rank, 0.0).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(relevant > 0, summed / relevant, np.nan)


def per_image_at_k(hits, num_true, k):
    """Per-image precision, recall, accuracy and F1 at k, each a float [N] array (dict)."""
    hits_at_k = hits[:, :min(k, hits.shape[1])].sum(axis=1).astype(np.float64)
    precision = hits_at_k / k
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = hits_at_k / num_true
        f1 = np.where(hits_at_k > 0, 2 * precision * recall / (precision + recall), 0.0)
    return {
        "precision": precision,
        "recall": recall,
        "accuracy": (hits_at_k > 0).astype(np.float64),
        "f1": f1,
        "hits": hits_at_k,
    }


def evaluate(scores, labels, top_k=(1, 3, 5, 10)):
    """Every metric of the report as a flat dict of Python floats in [0, 1].

    Keys: `precision@k`, `recall@k`, `accuracy@k`, `f1@k` and `micro_recall@k` for every k in
    top_k, then `map` and `label_map`. Raises ValueError when no image has a true tag.
    """
    scores, labels = _check(scores, labels)
    top_k = [int(k) for k in top_k]
    if any(k < 1 for k in top_k):
        raise ValueError(f"every k must be >= 1, got {top_k}")
    num_true = labels.sum(axis=1)
    tagged = num_true > 0
    if not tagged.any():
        raise ValueError("no image has a true tag: nothing to evaluate")
    per_tag_map = label_map(scores, labels)  # untagged images are negatives for every tag
    scores, labels, num_true = scores[tagged], labels[tagged], num_true[tagged]
    hits = hits_in_rank_order(labels, rank_tags(scores))
    result = {}
    for k in top_k:
        at_k = per_image_at_k(hits, num_true, k)
        for name in PER_IMAGE_METRICS:
            result[f"{name}@{k}"] = float(at_k[name].mean())
    result["map"] = float(average_precision_of_hits(hits).mean())
    result["label_map"] = per_tag_map
    for k in top_k:
        result[f"micro_recall@{k}"] = float(hits[:, :k].sum() / num_true.sum())
    return result


def images_with_tags(labels):
    """How many images have at least one true tag (the images every average runs over)."""
    return int((np.asarray(labels) != 0).any(axis=1).sum())


def per_tag_average_precision(scores, labels):
    """AP of each tag over images ranked by that tag's score: float [T], NaN without positives."""
    scores, labels = _check(scores, labels)
    order = rank_tags(scores.T)
    return average_precision_of_hits(hits_in_rank_order(labels.T, order))


def label_map(scores, labels):
    """Mean per-tag AP over the tags that have at least one positive image."""
    ap = per_tag_average_precision(scores, labels)
    ap = ap[~np.isnan(ap)]
    return float(ap.mean()) if ap.size else float("nan")


def per_tag_at_k(scores, labels, k=5):
    """Per-tag counts and precision/recall when each image predicts its top-k tags.

    Returns a dict of [T] arrays: support (positive images), predicted (images with the tag in
    their top k), correct, precision (correct / predicted, NaN when never predicted), recall
    (correct / support, NaN when no positive) and average_precision.
    """
    scores, labels = _check(scores, labels)
    num_tags = scores.shape[1]
    top = rank_tags(scores)[:, :min(k, num_tags)]
    predicted = np.bincount(top.ravel(), minlength=num_tags)
    correct = np.bincount(top.ravel(), weights=np.take_along_axis(labels, top, axis=1).ravel(),
                          minlength=num_tags).astype(np.int64)
    support = labels.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(predicted > 0, correct / predicted, np.nan)
        recall = np.where(support > 0, correct / support, np.nan)
    return {
        "support": support.astype(np.int64),
        "predicted": predicted.astype(np.int64),
        "correct": correct,
        "precision": precision,
        "recall": recall,
        "average_precision": per_tag_average_precision(scores, labels),
    }


def popularity_scores(train_tag_counts, num_images):
    """The popularity baseline's scores: every image gets the train split's tag counts [N, T].

    Ranking them gives the most frequent train tags first (ties by lower tag id) for every image.
    """
    counts = np.asarray(train_tag_counts, dtype=np.float64)
    if counts.ndim != 1:
        raise ValueError(f"train tag counts must be one count per tag, got shape {counts.shape}")
    return np.broadcast_to(counts, (int(num_images), counts.size))
