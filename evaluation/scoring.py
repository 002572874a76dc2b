"""Scoring a split with saved checkpoints: the inference graph evaluate.py runs.

One graph per run (inference mode: batch norm uses its moving averages), restored once per
checkpoint with tf.train.Saver; the eval input (data/pipeline.py's eval_dataset, the same eval
preprocessing as training and prediction) is re-initialised for each checkpoint, so every
image is scored exactly once per checkpoint, the last partial batch included.
"""
import csv
import os

import numpy as np
import tensorflow.compat.v1 as tf
from tqdm import tqdm

import cli
from data import harrison, pipeline
from evaluation import metrics
from nets import model, restoring, train_dir

class EvaluationError(cli.UserError):
    """Something the user must fix before evaluating."""


def check_vocab(records_dir, records_vocab, model_dir, model_vocab):
    """EvaluationError when the records' tag ids do not mean the same tags as the model's."""
    difference = train_dir.vocab_difference(records_vocab, model_vocab)
    if difference:
        raise EvaluationError(f"the vocabulary of {records_dir} differs from the model's "
                              f"({model_dir}/vocab.txt): {difference}; evaluate on the records "
                              "the model was trained with")


def _split_images(records_dir, splits):
    """The images (absolute paths) of `splits` in preprocess.py's output `records_dir`, from its
    split.csv and manifest.json; None when it cannot tell."""
    try:
        dataset_dir = harrison.load_manifest(records_dir)["dataset_dir"]
        with open(os.path.join(records_dir, "split.csv"), encoding="utf-8", newline="") as stream:
            return {os.path.normpath(os.path.join(dataset_dir, row["path"]))
                    for row in csv.DictReader(stream) if row.get("split") in splits}
    except (OSError, ValueError, KeyError, TypeError, harrison.FormatError):
        return None


def check_unseen(records_dir, split, config):
    """EvaluationError when the `split` of `records_dir` holds images the model was trained or
    chosen on (the train and val splits of the records_dir its train_config.json names), as far
    as both split.csv files tell: their scores would pass for a score on unseen images."""
    trained_on = config.get("records_dir")
    if not isinstance(trained_on, str) or os.path.realpath(trained_on) == os.path.realpath(
            records_dir):
        return
    scored, seen = _split_images(records_dir, {split}), _split_images(trained_on,
                                                                      {"train", "val"})
    overlap = len(scored & seen) if scored and seen else 0
    if overlap:
        raise EvaluationError(
            f"{overlap} of the {len(scored)} images of the {split} split of {records_dir} are "
            f"among those the model was trained and chosen on (the train and val splits of "
            f"{trained_on}, by their split.csv): their scores would not measure unseen images; "
            f"evaluate on {trained_on} (the default), or on records without those images")


class Scorer:
    """The inference graph of one train_dir's model over one split of the records, built for
    `config` (train_config.json) at its image size, or for a test-time variant's scoring config
    (nets/variants.scoring_config: its size and crop; with "mirror", the scores averaged with the mirror
    images' and, as "plain_scores", the images' own, from the same run)."""

    def __init__(self, config, records_dir, split, batch_size):
        self.config = config
        self.records_dir = records_dir
        self.split = split
        self.graph = tf.Graph()
        with self.graph.as_default():
            dataset = pipeline.eval_dataset(records_dir, split, int(config["image_size"]),
                                            batch_size, int(config["num_tags"]),
                                            crop_size=config.get("crop_size"))
            self.iterator = tf.data.make_initializable_iterator(dataset)
            batch = self.iterator.get_next()
            self.fetches = {"labels": batch["labels"], "path": batch["path"]}
            if config.get("mirror"):
                self.fetches["plain_scores"], self.fetches["scores"] = model.mirrored_scores(
                    batch["images"], config)
            else:
                self.fetches["scores"] = model.build_scores(batch["images"], config)
            self.savers = {False: tf.train.Saver()}  # by averaged: built once each
            # The model inputs are fetched only for the batches the contact sheet shows.
            self.fetches_with_images = dict(self.fetches, images=batch["images"])
        self.session = tf.Session(graph=self.graph)

    def score(self, checkpoint, keep_images=0, averaged=False):
        """Scores every image of the split with `checkpoint` (with `averaged`, the moving
        averages of its weights).

        Returns dict: scores float32 [N, T] (and plain_scores, with a mirroring config), labels
        bool [N, T], paths [N] (str) and images (the first `keep_images` model inputs, for the
        contact sheet).
        """
        self.savers[averaged] = restoring.restore_model(
            self.session, checkpoint, self.config, self.savers.get(averaged), averaged)
        self.session.run(self.iterator.initializer)
        scores, plain, labels, paths, images = [], [], [], [], []
        try:
            total = harrison.split_images(self.records_dir, self.split)
        except harrison.FormatError:
            total = None  # records without a manifest (made by hand) are scored all the same
        with tqdm(total=total, unit="img",
                  desc=f"{os.path.basename(checkpoint)} {self.split}", dynamic_ncols=True) as bar:
            while True:
                fetches = self.fetches_with_images if len(images) < keep_images else self.fetches
                try:
                    batch = self.session.run(fetches)
                except tf.errors.OutOfRangeError:
                    break
                scores.append(batch["scores"])
                plain.append(batch.get("plain_scores"))
                labels.append(batch["labels"] > 0.5)
                paths.extend(path.decode("utf-8") for path in batch["path"])
                if len(images) < keep_images:
                    images.extend(batch["images"][:keep_images - len(images)])
                bar.update(len(batch["path"]))
        if not paths:
            raise EvaluationError(f"the {self.split!r} split of {self.records_dir} has no images")
        scored = {"scores": np.concatenate(scores), "labels": np.concatenate(labels),
                  "paths": paths, "images": images}
        if "plain_scores" in self.fetches:
            scored["plain_scores"] = np.concatenate(plain)
        return scored

    def close(self):
        self.session.close()


def evaluate_scored(scored, train_counts, top_k):
    """(model metrics, popularity metrics) on the same images."""
    if not scored["labels"].any():
        raise EvaluationError("no scored image has a tag of the vocabulary: nothing to measure")
    model = metrics.evaluate(scored["scores"], scored["labels"], top_k)
    popularity = metrics.evaluate(
        metrics.popularity_scores(train_counts, len(scored["paths"])), scored["labels"], top_k)
    return model, popularity
