"""Validation while training: the val split scored with each new checkpoint, as evaluate.py
scores it (evaluation/scoring.py), so the checkpoint train.py keeps as the best is the one a
user would have picked, without ever looking at the test split.

The best checkpoint is chosen by the val `map` (mean over images of the average precision of the
ranked tags): it weighs the whole ranking, not just the first tag (P@1) or a cut at 5 (R@5, A@5),
so it moves smoothly from checkpoint to checkpoint on a 2,500-image split.

At the end of training, `Validator.choose_variant` scores the best checkpoint on val in every
test-time variant it has (nets/variants.py) and records the winner by the same metric in
best.json, the default variant winning ties.
"""
import tensorflow.compat.v1 as tf
from absl import logging

from evaluation import metrics, scoring
from nets import restoring, train_dir, variants

METRIC = "map"
REPORTED = ("precision@1", "recall@5", "accuracy@5", "map")


class Validator:
    """Scores the val split with a checkpoint; writes val/ summaries beside the popularity
    baseline's; records the best checkpoint in the train_dir (best.json)."""

    def __init__(self, config, records_dir, train_counts, directory, batch_size=32):
        self.directory, self.config, self.records_dir = directory, config, records_dir
        self.batch_size = batch_size
        self.scorer = scoring.Scorer(config, records_dir, "val", batch_size)
        self.train_counts = train_counts
        self.best = train_dir.best(directory)
        self.warned = False

    def __call__(self, checkpoint, step, writer, what="model"):
        """The val metrics of `checkpoint`; True in "improved" when it is the new best."""
        scored = self.scorer.score(checkpoint)
        model, popularity = scoring.evaluate_scored(scored, self.train_counts, (1, 5))
        values = [tf.Summary.Value(tag=f"val/{name}", simple_value=model[name])
                  for name in REPORTED]
        values += [tf.Summary.Value(tag=f"val_popularity/{name}", simple_value=popularity[name])
                   for name in REPORTED]
        writer.add_summary(tf.Summary(value=values), step)
        writer.flush()
        print(f"val at step {step} ({what}, {len(scored['paths'])} images): " + ", ".join(
            f"{name} {100 * model[name]:.2f} (popularity {100 * popularity[name]:.2f})"
            for name in REPORTED))
        if not self.warned:
            self._check_beats_popularity(model, popularity, what)
        improved = self.best is None or model[METRIC] > self.best["value"]
        if improved:
            train_dir.record_best(self.directory, step, METRIC, model[METRIC])
            self.best = train_dir.best(self.directory)
        return dict(model, improved=improved)

    def _check_beats_popularity(self, model, popularity, what):
        # Wrong warm-start weights or broken records give a model no better than always
        # answering the most frequent tags: say so before the user spends an hour of GPU.
        self.warned = True
        if model[METRIC] <= popularity[METRIC] or (
                model["precision@1"] <= popularity["precision@1"]):
            logging.warning(
                "\n%s\nThe %s does NOT beat the popularity baseline on the val split (%s %.2f "
                "vs %.2f, precision@1 %.2f vs %.2f).\nCheck the warm start (--warm_start) and "
                "the records before training further: this run is not learning from the "
                "pictures.\n%s", "!" * 78, what, METRIC, 100 * model[METRIC],
                100 * popularity[METRIC], 100 * model["precision@1"],
                100 * popularity["precision@1"], "!" * 78)

    def choose_variant(self):
        """Scores the best checkpoint on val in every test-time variant and records them and the
        winner in best.json; returns the winner (None without a best checkpoint)."""
        best = train_dir.best(self.directory)
        if best is None:
            return None
        checkpoint = train_dir.checkpoint_prefix(self.directory, best["step"])
        candidates = variants.candidates(self.config, restoring.has_averages(checkpoint))
        scores = {}
        for size in sorted({variant.image_size for variant in candidates}):
            # One graph per size, its scores with and without the mirror images from one run.
            scorer = scoring.Scorer(variants.scoring_config(self.config, variants.Variant(
                "raw", size, True)), self.records_dir, "val", self.batch_size)
            try:
                for weights in sorted({v.weights for v in candidates if v.image_size == size}):
                    scored = scorer.score(checkpoint, averaged=weights == "averaged")
                    for mirror, key in ((False, "plain_scores"), (True, "scores")):
                        values = metrics.evaluate(scored[key], scored["labels"], (1, 5))
                        scores[variants.Variant(weights, size, mirror)] = {
                            name: float(values[name]) for name in REPORTED}
            finally:
                scorer.close()
        winner = candidates[0]  # the default: replaced only by a strictly better one
        for variant in candidates:
            if scores[variant][METRIC] > scores[winner][METRIC]:
                winner = variant
        train_dir.record_best(self.directory, best["step"], best["metric"], best["value"],
                              variants.to_record(winner),
                              [{"variant": variants.to_record(v), "scores": scores[v]}
                               for v in candidates])
        print(f"test-time variants of step {best['step']} on val ({METRIC}): " + "; ".join(
            f"{variants.describe(v)} {100 * scores[v][METRIC]:.2f}" for v in candidates))
        print(f"chosen: {variants.describe(winner)} ({METRIC} {100 * scores[winner][METRIC]:.2f} "
              f"against {100 * scores[candidates[0]][METRIC]:.2f} as trained), in "
              f"{train_dir.BEST_FILE}")
        return winner

    def close(self):
        self.scorer.close()
