"""tf.data input over the TFRecords of preprocess.py (data/records.py's schema).

Training: endless shuffled batches of random crops, decoded (data/preprocessing.py) in parallel,
batched and prefetched so the input never waits on the model; the flip and colour distortion
are applied batched in the model's graph. Evaluation: every record of a split exactly once, in
file order, through the eval preprocessing.
"""
import csv
import glob
import os

import numpy as np
import tensorflow as tf

import cli
from data import harrison, preprocessing, records


class InputError(cli.UserError):
    """Missing or unusable records."""


def shard_files(records_dir, split):
    """The sorted `{split}-*-of-*.tfrecord` shards of `records_dir`; InputError when none."""
    files = sorted(glob.glob(os.path.join(glob.escape(records_dir), f"{split}-*-of-*.tfrecord")))
    if not files:
        raise InputError(f"no {split!r} TFRecords in {records_dir} "
                         f"(expected {split}-00000-of-NNNNN.tfrecord from preprocess.py)")
    return files


def _parse(serialized, num_tags):
    """(encoded image bytes, multi-hot float32 [num_tags], path) of one serialized Example."""
    features = tf.io.parse_single_example(serialized, records.feature_spec())
    tag_ids = features[records.TAGS].values
    # Sum then clip (not max): an image without tags gets zeros, a repeated id counts once.
    labels = tf.minimum(tf.reduce_sum(tf.one_hot(tag_ids, num_tags, dtype=tf.float32), 0), 1.0)
    return features[records.ENCODED], labels, features[records.PATH]


def train_dataset(records_dir, image_size, batch_size, num_tags, seed=0, split="train",
                  shuffle_buffer=2048, num_parallel_calls=tf.data.AUTOTUNE,
                  min_crop_area=preprocessing.MIN_CROP_AREA):
    """Endless shuffled batches of training crops, as dicts {"images": uint8 [B, S, S, 3] (the
    random crops, resized: preprocessing.train_image), "draws": float32 [B, NUM_DRAWS] (each
    image's flip and colour draws), "labels": multi-hot float32 [B, num_tags]}; the model's
    graph finishes the augmentation (preprocessing.distort_batch). Batches are full
    (drop_remainder) so shapes are static, which the XLA and mixed-precision paths like."""
    files = shard_files(records_dir, split)
    dataset = tf.data.Dataset.from_tensor_slices(files)
    dataset = dataset.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.interleave(tf.data.TFRecordDataset, cycle_length=min(len(files), 8),
                                 num_parallel_calls=num_parallel_calls, deterministic=True)
    dataset = dataset.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.repeat()
    dataset = dataset.enumerate()

    def crop(index, serialized):
        encoded, labels, _ = _parse(serialized, num_tags)
        image_seed = tf.stack([tf.cast(seed, tf.int64), index])
        return {"images": preprocessing.train_image(encoded, image_size, image_seed,
                                                    min_crop_area),
                "draws": preprocessing.distortion_draws(image_seed), "labels": labels}

    dataset = dataset.map(crop, num_parallel_calls=num_parallel_calls, deterministic=True)
    dataset = dataset.batch(batch_size, drop_remainder=True)
    return dataset.prefetch(tf.data.AUTOTUNE)


def eval_dataset(records_dir, split, image_size, batch_size, num_tags,
                 num_parallel_calls=tf.data.AUTOTUNE, skip=0, crop_size=None):
    """Every record of `split` exactly once (after the first `skip`), in file order, as dicts
    {"images", "labels" (multi-hot float32), "path" (string)}; the last partial batch is kept.
    `crop_size`: preprocessing.eval_image's."""
    dataset = tf.data.TFRecordDataset(shard_files(records_dir, split)).skip(skip)

    def prepare(serialized):
        encoded, labels, path = _parse(serialized, num_tags)
        return {"images": preprocessing.eval_image(encoded, image_size, crop_size),
                "labels": labels,
                "path": path}

    dataset = dataset.map(prepare, num_parallel_calls=num_parallel_calls, deterministic=True)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def tag_counts(records_dir, vocab, split="train"):
    """How many images of a split carry each tag, int [T]: the popularity baseline, and the
    tag priors a new head starts from (train split).

    From preprocess.py's tag_stats.csv (its column of the split) when present; otherwise
    counted from the split's TFRecords' tag lists (eager mode).
    """
    path = os.path.join(records_dir, harrison.TAG_STATS_FILE)
    if os.path.isfile(path):
        with open(path, encoding="utf-8", newline="") as stream:
            rows = list(csv.DictReader(stream))
        if rows and split in rows[0] and "tag" in rows[0]:
            counts = dict.fromkeys(vocab, 0)
            for row in rows:
                if row["tag"] in counts:
                    counts[row["tag"]] = int(row[split] or 0)
            return np.array([counts[tag] for tag in vocab], dtype=np.int64)
    counts = np.zeros(len(vocab), dtype=np.int64)
    files = shard_files(records_dir, split)
    for serialized in tf.data.TFRecordDataset(files).as_numpy_iterator():
        tags = records.decode_example(serialized)["tags"]
        counts[[tag for tag in set(tags) if 0 <= tag < len(vocab)]] += 1
    return counts
