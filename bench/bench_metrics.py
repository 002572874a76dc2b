"""Benchmark: evaluation.metrics at HARRISON's test scale, against a plain per-image loop.

Labels: 5,000 images drawn (seed 0) from the real tag lists (../shared/harrison: 997 tags,
4.5 per image), or random ones with the same density when the lists are absent. Scores: random
float32, rounded to 3 decimals so ties occur as with a real model's saturated sigmoids.

Printed figures, measured in the same run:
- evaluation.metrics.evaluate (every metric at k = 1, 3, 5, 10, map and label_map): seconds;
- the floor: a plain Python loop computing only P/R/A@k and AP per image (sorted() with the same
  tie rule), timed on --loop_images images and scaled to 5,000;
- their ratio (how many times faster the vectorised code is, while computing more).

    python3 bench/bench_metrics.py
"""
import os
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from evaluation import metrics  # noqa: E402

LISTS_DIR = os.path.join(REPO, "..", "shared", "harrison")
IMAGES = 5000
LOOP_IMAGES = 500
TOP_K = (1, 3, 5, 10)


def real_labels(rng):
    vocab_path = os.path.join(LISTS_DIR, "vocab_index.txt")
    tags_path = os.path.join(LISTS_DIR, "tag_list.txt")
    if not (os.path.isfile(vocab_path) and os.path.isfile(tags_path)):
        return None
    with open(vocab_path, encoding="utf-8") as stream:
        index = {line.split()[0]: row for row, line in enumerate(stream) if line.strip()}
    with open(tags_path, encoding="utf-8") as stream:
        lines = stream.read().splitlines()
    labels = np.zeros((IMAGES, len(index)), dtype=bool)
    for row, line in enumerate(rng.choice(len(lines), IMAGES, replace=False)):
        labels[row, [index[tag] for tag in lines[line].split() if tag in index]] = True
    return labels


def loop_metrics(scores, labels):
    totals = np.zeros(3 * len(TOP_K) + 1)
    for row_scores, row_labels in zip(scores, labels):
        truth = set(np.flatnonzero(row_labels).tolist())
        ranked = sorted(range(len(row_scores)), key=lambda tag: (-row_scores[tag], tag))
        for i, k in enumerate(TOP_K):
            hits = len(truth.intersection(ranked[:k]))
            totals[3 * i:3 * i + 3] += (hits / k, hits / len(truth), hits > 0)
        found, precision_sum = 0, 0.0
        for rank, tag in enumerate(ranked, start=1):
            if tag in truth:
                found += 1
                precision_sum += found / rank
        totals[-1] += precision_sum / len(truth)
    return totals / len(scores)


def main():
    rng = np.random.default_rng(0)
    labels = real_labels(rng)
    source = "real HARRISON tag lists"
    if labels is None:
        labels = rng.random((IMAGES, 997)) < 4.5 / 997
        source = "random labels (../shared/harrison not found)"
    labels[~labels.any(axis=1), 0] = True  # the loop floor needs at least one tag per image
    scores = np.round(rng.random(labels.shape, dtype=np.float32), 3)
    print(f"{IMAGES} images x {labels.shape[1]} tags, {labels.sum(1).mean():.2f} tags/image "
          f"({source})")

    start = time.perf_counter()
    result = metrics.evaluate(scores, labels, TOP_K)
    vectorised = time.perf_counter() - start

    start = time.perf_counter()
    floor = loop_metrics(scores[:LOOP_IMAGES], labels[:LOOP_IMAGES])
    loop = (time.perf_counter() - start) * IMAGES / LOOP_IMAGES

    check = metrics.evaluate(scores[:LOOP_IMAGES], labels[:LOOP_IMAGES], TOP_K)
    assert np.isclose(check["precision@5"], floor[6]) and np.isclose(check["map"], floor[-1])
    print(f"evaluation.metrics.evaluate: {vectorised:.2f} s (all metrics, k={TOP_K}, "
          f"map, label_map); P@1 of random scores {result['precision@1']:.4f}")
    print(f"plain loop floor: {loop:.2f} s (scaled from {LOOP_IMAGES} images)")
    print(f"ratio: {loop / vectorised:.1f}x faster than the loop")


if __name__ == "__main__":
    main()
