"""tf.data input over the TFRecords of preprocess.py, and the image preprocessing.

Training: inception-style augmentation (as slim's `inception_preprocessing`: a random
distorted-bounding-box crop, a random left-right flip and a mild colour distortion), decoded and
augmented in parallel, batched and prefetched so the input never waits on the model.

Evaluation: `eval_image` (central crop of 0.875, resize, scale to [-1, 1]) is THE eval
preprocessing; evaluate.py, predict.py and export.py all call it, so a model is always scored on
images prepared exactly as in training's eval path.

The augmentation uses stateless random ops seeded by (seed, position in the stream), so a run
with the same --seed sees the same crops in the same order, whatever the parallelism.
"""
import glob
import os

import tensorflow as tf

from data import records

# slim's inception_preprocessing.distorted_bounding_box_crop defaults.
MIN_OBJECT_COVERED = 0.1
ASPECT_RATIO_RANGE = (3.0 / 4.0, 4.0 / 3.0)
AREA_RANGE = (0.05, 1.0)
EVAL_CENTRAL_FRACTION = 0.875


class InputError(ValueError):
    """Missing or unusable records (a one-line message for the user)."""


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


def _to_unit_range(image):
    return tf.image.convert_image_dtype(image, tf.float32)  # uint8 -> [0, 1]


def _to_model_range(image):
    return (tf.clip_by_value(image, 0.0, 1.0) - 0.5) * 2.0  # [0, 1] -> [-1, 1], as slim


def eval_image(encoded, image_size):
    """THE eval preprocessing: JPEG/PNG bytes -> float32 [S, S, 3] in [-1, 1].

    Decode (3 channels), keep the central 87.5% (slim's inception_preprocessing eval crop),
    resize bilinearly to image_size x image_size, scale to [-1, 1].
    """
    image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    image = _to_unit_range(image)
    image = tf.image.central_crop(image, central_fraction=EVAL_CENTRAL_FRACTION)
    image = tf.image.resize(image, [image_size, image_size], method="bilinear")
    image.set_shape([image_size, image_size, 3])
    return _to_model_range(image)


def train_image(encoded, image_size, seed):
    """Inception-style training augmentation: JPEG bytes -> float32 [S, S, 3] in [-1, 1].

    `seed` is a stateless seed (int32/int64 [2]); each op draws from its own derived seed.
    """
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=6)
    shape = tf.image.extract_jpeg_shape(encoded)
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        shape, bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]), seed=seeds[0],
        min_object_covered=MIN_OBJECT_COVERED, aspect_ratio_range=ASPECT_RATIO_RANGE,
        area_range=AREA_RANGE, max_attempts=100, use_image_if_no_bounding_boxes=True)
    # Decoding only the crop window skips most of the IDCT work on large photos.
    crop_window = tf.stack([begin[0], begin[1], size[0], size[1]])
    image = tf.io.decode_and_crop_jpeg(encoded, crop_window, channels=3)
    image = _to_unit_range(image)
    image = tf.image.resize(image, [image_size, image_size], method="bilinear")
    image = tf.image.stateless_random_flip_left_right(image, seed=seeds[1])
    # Mild colour distortion: slim's fast_mode ordering (brightness then saturation), plus a
    # small hue and contrast jitter.
    image = tf.image.stateless_random_brightness(image, 32.0 / 255.0, seed=seeds[2])
    image = tf.image.stateless_random_saturation(image, 0.5, 1.5, seed=seeds[3])
    image = tf.image.stateless_random_hue(image, 0.05, seed=seeds[4])
    image = tf.image.stateless_random_contrast(image, 0.8, 1.2, seed=seeds[5])
    image.set_shape([image_size, image_size, 3])
    return _to_model_range(image)


def train_dataset(records_dir, image_size, batch_size, num_tags, seed=0, split="train",
                  shuffle_buffer=2048, num_parallel_calls=tf.data.AUTOTUNE):
    """Endless shuffled, augmented batches: (images float32 [B, S, S, 3] in [-1, 1],
    labels multi-hot float32 [B, num_tags]). Batches are full (drop_remainder) so shapes are
    static, which the XLA and mixed-precision paths like."""
    files = shard_files(records_dir, split)
    dataset = tf.data.Dataset.from_tensor_slices(files)
    dataset = dataset.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.interleave(tf.data.TFRecordDataset, cycle_length=min(len(files), 8),
                                 num_parallel_calls=num_parallel_calls, deterministic=True)
    dataset = dataset.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.repeat()
    dataset = dataset.enumerate()

    def augment(index, serialized):
        encoded, labels, _ = _parse(serialized, num_tags)
        image = train_image(encoded, image_size, tf.stack([tf.cast(seed, tf.int64), index]))
        return image, labels

    dataset = dataset.map(augment, num_parallel_calls=num_parallel_calls, deterministic=True)
    dataset = dataset.batch(batch_size, drop_remainder=True)
    return dataset.prefetch(tf.data.AUTOTUNE)


def eval_dataset(records_dir, split, image_size, batch_size, num_tags,
                 num_parallel_calls=tf.data.AUTOTUNE):
    """Every record of `split` exactly once, in file order, as dicts {"images", "labels"
    (multi-hot float32), "path" (string)}; the last partial batch is kept."""
    dataset = tf.data.TFRecordDataset(shard_files(records_dir, split))

    def prepare(serialized):
        encoded, labels, path = _parse(serialized, num_tags)
        return {"images": eval_image(encoded, image_size), "labels": labels, "path": path}

    dataset = dataset.map(prepare, num_parallel_calls=num_parallel_calls, deterministic=True)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)
