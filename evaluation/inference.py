"""Scoring a split with saved checkpoints: the inference graph evaluate.py runs.

One graph per run (inference mode: batch norm uses its moving averages), restored once per
checkpoint with tf.train.Saver; the eval input (data/input.py's eval_dataset, the same eval
preprocessing as training and prediction) is re-initialised for each checkpoint, so every
image is scored exactly once per checkpoint, the last partial batch included.
"""
import csv
import os
import re

import numpy as np

from nets import compat

compat.import_slim()

import tensorflow.compat.v1 as tf  # noqa: E402
from tqdm import tqdm  # noqa: E402

from data import harrison, input as data_input, records  # noqa: E402
from evaluation import metrics  # noqa: E402
from nets import tagging  # noqa: E402

TAG_STATS_FILE = "tag_stats.csv"


class EvaluationError(ValueError):
    """Something the user must fix before evaluating; the message is one line."""


def checkpoint_step(prefix):
    """The global step saved in a checkpoint (its `global_step` variable, else the -N suffix)."""
    try:
        reader = tf.train.load_checkpoint(prefix)
        if reader.has_tensor("global_step"):
            return int(reader.get_tensor("global_step"))
    except (tf.errors.OpError, ValueError):
        pass
    match = re.search(r"-(\d+)$", prefix)
    if match:
        return int(match.group(1))
    raise EvaluationError(f"cannot tell the global step of checkpoint {prefix}")


def _exists(prefix):
    return os.path.exists(prefix + ".index")


def all_checkpoints(train_dir):
    """Every checkpoint the train_dir's `checkpoint` file lists, oldest step first.

    Paths recorded in the file are tried as written, then by name inside train_dir (a run copied
    elsewhere, e.g. from Colab to Drive, keeps its absolute paths in the file).
    """
    state = tf.train.get_checkpoint_state(train_dir)
    listed = list(state.all_model_checkpoint_paths) if state else []
    if state and state.model_checkpoint_path and state.model_checkpoint_path not in listed:
        listed.append(state.model_checkpoint_path)
    prefixes = []
    for prefix in listed:
        if not _exists(prefix):
            prefix = os.path.join(train_dir, os.path.basename(prefix))
        if _exists(prefix) and prefix not in prefixes:
            prefixes.append(prefix)
    if not prefixes:
        raise EvaluationError(f"no checkpoint listed in {os.path.join(train_dir, 'checkpoint')}")
    return sorted(prefixes, key=checkpoint_step)


def check_vocab(records_dir, records_vocab, train_dir, train_vocab):
    """EvaluationError when the records' tag ids do not mean the same tags as the model's."""
    if records_vocab == train_vocab:
        return
    if len(records_vocab) != len(train_vocab):
        detail = f"{len(records_vocab)} tags vs {len(train_vocab)}"
    else:
        first = next(i for i, (a, b) in enumerate(zip(records_vocab, train_vocab)) if a != b)
        detail = f"tag id {first} is {records_vocab[first]!r} vs {train_vocab[first]!r}"
    raise EvaluationError(f"the vocabulary of {records_dir} differs from the checkpoint's "
                          f"({train_dir}/vocab.txt): {detail}; evaluate on the records the model "
                          "was trained with")


def split_size(records_dir, split):
    """Images in a split according to manifest.json (None when the manifest does not say)."""
    try:
        manifest = harrison.load_manifest(records_dir)
    except harrison.FormatError:
        return None
    info = manifest.get("splits", {}).get(split)
    return info.get("images") if isinstance(info, dict) else None


def train_tag_counts(records_dir, vocab):
    """How many train images carry each tag (the popularity baseline), int [T].

    From preprocess.py's tag_stats.csv (its `train` column) when present; otherwise counted
    from the train TFRecords' tag lists.
    """
    path = os.path.join(records_dir, TAG_STATS_FILE)
    if os.path.isfile(path):
        with open(path, encoding="utf-8", newline="") as stream:
            rows = list(csv.DictReader(stream))
        if rows and "train" in rows[0] and "tag" in rows[0]:
            counts = dict.fromkeys(vocab, 0)
            for row in rows:
                if row["tag"] in counts:
                    counts[row["tag"]] = int(row["train"] or 0)
            return np.array([counts[tag] for tag in vocab], dtype=np.int64)
    counts = np.zeros(len(vocab), dtype=np.int64)
    files = data_input.shard_files(records_dir, "train")
    for serialized in tf.data.TFRecordDataset(files).as_numpy_iterator():
        tags = records.decode_example(serialized)["tags"]
        counts[[tag for tag in set(tags) if 0 <= tag < len(vocab)]] += 1
    return counts


class Scorer:
    """The inference graph of one train_dir's model over one split of the records."""

    def __init__(self, config, records_dir, split, batch_size):
        self.config = config
        self.records_dir = records_dir
        self.split = split
        self.batch_size = batch_size
        self.num_tags = int(config["num_tags"])
        self.graph = tf.Graph()
        with self.graph.as_default():
            dataset = data_input.eval_dataset(records_dir, split, int(config["image_size"]),
                                              batch_size, self.num_tags)
            self.iterator = tf.data.make_initializable_iterator(dataset)
            batch = self.iterator.get_next()
            logits, _ = tagging.build_logits(
                batch["images"], self.num_tags, config["backbone"],
                float(config["depth_multiplier"]), is_training=False)
            self.fetches = {"scores": tagging.scores_from_logits(logits, config["loss"]),
                            "labels": batch["labels"], "path": batch["path"]}
            # The model inputs are fetched only for the batches the contact sheet shows.
            self.fetches_with_images = dict(self.fetches, images=batch["images"])
            self.saver = tf.train.Saver()
        self.session = tf.Session(graph=self.graph)

    def restore(self, checkpoint):
        try:
            with self.graph.as_default():  # outside its graph, Saver.restore takes an eager path
                self.saver.restore(self.session, checkpoint)
        except (tf.errors.NotFoundError, tf.errors.InvalidArgumentError, ValueError) as error:
            message = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise EvaluationError(f"cannot restore {checkpoint} into the {self.config['backbone']}"
                                  f" model of train_config.json: {message}") from None

    def score(self, checkpoint, keep_images=0):
        """Scores every image of the split with `checkpoint`.

        Returns dict: scores float32 [N, T], labels bool [N, T], paths [N] (str) and images
        (the first `keep_images` model inputs, for the contact sheet).
        """
        self.restore(checkpoint)
        self.session.run(self.iterator.initializer)
        scores, labels, paths, images = [], [], [], []
        with tqdm(total=split_size(self.records_dir, self.split), unit="img",
                  desc=f"{os.path.basename(checkpoint)} {self.split}", dynamic_ncols=True) as bar:
            while True:
                fetches = self.fetches_with_images if len(images) < keep_images else self.fetches
                try:
                    batch = self.session.run(fetches)
                except tf.errors.OutOfRangeError:
                    break
                scores.append(batch["scores"])
                labels.append(batch["labels"] > 0.5)
                paths.extend(path.decode("utf-8") for path in batch["path"])
                if len(images) < keep_images:
                    images.extend(batch["images"][:keep_images - len(images)])
                bar.update(len(batch["path"]))
        if not paths:
            raise EvaluationError(f"the {self.split!r} split of {self.records_dir} has no images")
        return {"scores": np.concatenate(scores), "labels": np.concatenate(labels),
                "paths": paths, "images": images}

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
