"""Stage 1 of the recipe: a linear probe of the frozen warm-start backbone (LP-FT: Kumar et al.,
ICLR 2022, "Fine-tuning can distort pretrained features"; also slim's advice to train a new head
before the whole network).

1. `cache_features`: the backbone's image features (nets/model.build_features: inference mode,
   the eval preprocessing) of every image of a split, computed once and cached as float16 in
   `<train_dir>/probe/`, in chunks written atomically: a killed run resumes at its last chunk.
   The cache records what made it (`features_key`: the warm-start checkpoint's identity, the
   records' manifest, backbone, depth, image size) and is computed again when any differs: a
   rerun with another checkpoint or image size would otherwise fit the head on stale features.
2. `train_head`: the tag head (the main head's weights and biases, slim's variable names) fitted
   on the cached features by Adam for many epochs (seconds to minutes), starting from the tag
   priors; the epoch with the best validation score is kept and written as a checkpoint.
Stage 2 (nets/training.build_run with head_from) starts fine-tuning from the warm-start backbone
and this head, so the whole network never sees the content-free gradients of a random head.

This is also the paper's own method (pretrained CNN features + a classifier) on a better
backbone, so train.py reports the probe's validation metrics as a result of its own.
"""
import glob
import hashlib
import json
import os
import zipfile

import numpy as np
import tensorflow.compat.v1 as tf
from absl import logging
from tqdm import tqdm

import cli
from data import atomic, pipeline
from nets import model, train_dir

PROBE_DIR = "probe"
HEAD_PREFIX = "head.ckpt"
CHUNK_IMAGES = 4096  # images per cached chunk: the work a kill can lose
PROBE_BATCH = 1024   # features per Adam step
KEY_FILE = "features.json"  # what made the cached features (features_key)
KEY_FIELDS = ("backbone", "depth_multiplier", "image_size")


def probe_dir(directory):
    return os.path.join(directory, PROBE_DIR)


def _chunks(directory, split):
    return sorted(glob.glob(os.path.join(glob.escape(probe_dir(directory)),
                                         f"features-{split}-*.npz")))


def _digest(path):
    sha = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(2**20), b""):
            sha.update(block)
    return sha.hexdigest()


def features_key(checkpoint, records_dir, config):
    """What features are made of: the warm-start checkpoint (a V2 checkpoint's index holds every
    tensor's name, shape and checksum: its digest names the weights; a V1 file its size and
    time), the records (their manifest's digest), and the backbone, depth and image size."""
    if os.path.isfile(checkpoint + ".index"):
        weights = "sha256:" + _digest(checkpoint + ".index")
    else:
        status = os.stat(checkpoint)
        weights = f"{os.path.abspath(checkpoint)} {status.st_size} {status.st_mtime_ns}"
    return {"warm_start": weights,
            "records": "sha256:" + _digest(os.path.join(records_dir, "manifest.json")),
            **{name: config[name] for name in KEY_FIELDS}}


def _keep_cache_of(directory, key):
    """Empties the cache (with one warning) unless `key` made it; then records `key`."""
    path = os.path.join(probe_dir(directory), KEY_FILE)
    try:
        with open(path, encoding="utf-8") as stream:
            made_by = json.load(stream)
    except FileNotFoundError:
        made_by = None
    except (OSError, ValueError):
        made_by = "unreadable"
    if made_by == key:
        return
    stale = glob.glob(os.path.join(glob.escape(probe_dir(directory)), "features-*.npz"))
    if stale:
        differs = [name for name in key if not isinstance(made_by, dict)
                   or made_by.get(name) != key[name]]
        logging.warning("the cached probe features in %s were made with another %s; computing "
                        "them again", probe_dir(directory), ", ".join(differs))
        for chunk in stale:
            os.remove(chunk)
    atomic.write_text(path, json.dumps(key, indent=1) + "\n")


def cache_features(directory, config, records_dir, split, images, restore, checkpoint,
                   batch_size=64):
    """(features float16 [N, F], labels bool [N, T]) of every image of `split`, computed with
    the backbone `restore(session)` loads from `checkpoint`, cached in chunks under
    `<directory>/probe/` (computed again when features_key differs)."""
    _keep_cache_of(directory, features_key(checkpoint, records_dir, config))
    done = _load_chunks(directory, split)
    computed = sum(len(labels) for _, labels in done)
    if computed < images:
        with tf.Graph().as_default():
            dataset = pipeline.eval_dataset(records_dir, split, int(config["image_size"]),
                                            batch_size, int(config["num_tags"]), skip=computed)
            batch = tf.data.make_one_shot_iterator(dataset).get_next()
            features = model.build_features(batch["images"], config)
            restore_fn = restore()
            with tf.Session() as session:
                restore_fn(session)
                _compute_chunks(session, features, batch["labels"], directory, split,
                                computed, images, len(done))
        done = _load_chunks(directory, split)
    return (np.concatenate([features for features, _ in done]),
            np.concatenate([labels for _, labels in done]))


def _load_chunks(directory, split):
    """[(features, labels)] of the split's cached chunks, in order, as far as they read whole.
    A damaged chunk (cut short, garbage, an array missing or of another shape) is removed with
    every chunk after it, with a warning: they are computed again."""
    chunks, loaded = _chunks(directory, split), []
    for position, path in enumerate(chunks):
        try:
            with np.load(path) as arrays:
                features, labels = arrays["features"], arrays["labels"]
            problem = None if (features.ndim == 2 and labels.ndim == 2 and labels.dtype == bool
                               and len(features) == len(labels) > 0) else "arrays of bad shapes"
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
            problem = cli.first_line(error)
        if problem:
            logging.warning("%s is damaged (%s); computing it and the chunks after it again",
                            path, problem)
            for stale in chunks[position:]:
                os.remove(stale)
            return loaded
        loaded.append((features, labels))
    return loaded


def _compute_chunks(session, features, labels, directory, split, computed, images, index):
    pending_features, pending_labels = [], []
    with tqdm(total=images, initial=computed, unit="img", desc=f"probe features ({split})",
              dynamic_ncols=True) as bar:
        while True:
            try:
                values, targets = session.run([features, labels])
            except tf.errors.OutOfRangeError:
                values = None
            if values is not None:
                if not np.isfinite(values).all():
                    raise cli.UserError(
                        f"the warm-start backbone gives non-finite features on the {split} "
                        "split: is --warm_start a trained checkpoint of this backbone?")
                # float16 halves the cache; a backbone whose features pass its range keeps
                # float32 rather than overflow.
                small = np.abs(values).max() < np.finfo(np.float16).max / 2
                pending_features.append(values.astype(np.float16 if small else np.float32))
                pending_labels.append(targets > 0.5)
                bar.update(len(values))
            if sum(len(f) for f in pending_features) >= CHUNK_IMAGES or (
                    values is None and pending_features):
                path = os.path.join(probe_dir(directory), f"features-{split}-{index:05d}.npz")
                with atomic.atomic_path(path) as temporary:
                    with open(temporary, "wb") as stream:
                        np.savez(stream, features=np.concatenate(pending_features),
                                 labels=np.concatenate(pending_labels))
                pending_features, pending_labels, index = [], [], index + 1
            if values is None:
                return


def train_head(directory, config, train, val, prior_biases, epochs, learning_rate,
               weight_decay, score, seed=0):
    """Fits the main head on (features, labels) of `train`; keeps the epoch whose val features
    score best by `score(scores [N, T], labels [N, T]) -> float`. Writes the head as
    `<directory>/probe/head.ckpt` (slim's variable names); returns (path, best val score, epoch).
    """
    head = model.get_backbone(config["backbone"]).heads[0]
    num_tags = int(config["num_tags"])
    rng = np.random.default_rng(seed)
    with tf.Graph().as_default():
        features = tf.placeholder(tf.float32, [None, train[0].shape[1]])
        labels = tf.placeholder(tf.float32, [None, num_tags])
        with tf.variable_scope(head):  # the conv's variables: [1, 1, F, T] and [T]
            weights = tf.get_variable("weights", [1, 1, train[0].shape[1], num_tags],
                                      initializer=tf.zeros_initializer())
            biases = tf.get_variable("biases", initializer=tf.constant(prior_biases))
        logits = probe_logits(features, weights, biases)
        # The same L2 term slim's arg_scope gives the head in fine-tuning: wd * sum(w^2) / 2.
        loss = (model.tagging_loss(logits, labels, config["loss"])
                + weight_decay * tf.nn.l2_loss(weights))
        step = tf.train.AdamOptimizer(learning_rate).minimize(loss)
        scores = model.scores_from_logits(logits, config["loss"])
        saver = tf.train.Saver([weights, biases])
        best, best_epoch = -np.inf, 0
        path = os.path.join(probe_dir(directory), HEAD_PREFIX)
        with tf.Session() as session:
            session.run(tf.global_variables_initializer())
            for epoch in tqdm(range(1, epochs + 1), unit="epoch", desc="probe head",
                              dynamic_ncols=True):
                order = rng.permutation(len(train[0]))
                for start in range(0, len(order), PROBE_BATCH):
                    chosen = order[start:start + PROBE_BATCH]
                    session.run(step, {features: train[0][chosen], labels: train[1][chosen]})
                value = score(_predict(session, scores, features, val[0]), val[1])
                if value > best:
                    best, best_epoch = value, epoch
                    saver.save(session, train_dir.tf_path(path), write_meta_graph=False,
                               write_state=False)
    logging.info("linear probe: best val score %.4f at epoch %d of %d", best, best_epoch, epochs)
    return path, best, best_epoch


def probe_logits(features, weights, biases):
    """The main head's logits on cached features [N, F]: the main head's 1x1 convolution
    (weights [1, 1, F, T], biases [T]) on their global mean, as a matrix product."""
    return tf.matmul(features, weights[0, 0]) + biases


def _predict(session, scores, features, values):
    return np.concatenate([session.run(scores, {features: values[start:start + PROBE_BATCH]})
                           for start in range(0, len(values), PROBE_BATCH)])
