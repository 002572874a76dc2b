"""The train_dir: what train.py leaves there, and how every script finds, checks and loads it.

A train_dir holds
- `train_config.json`: the run's settings; MODEL_FIELDS are the ones that define the model;
- `vocab.txt`: the records' vocabulary (line number = tag id), copied so the train_dir is enough
  to use the model;
- `model.ckpt-<step>.index` + `model.ckpt-<step>.data-*`: the checkpoints (TF's V2 format);
  `model.ckpt-0` is the linear probe's model when the run had one (nets/linear_probe.py);
- `best.json`: which checkpoint scored best on the val split (train.py keeps it from rotation),
  and the test-time variant chosen for it on val (nets/variants.py); evaluate.py, predict.py
  and export.py use both when given the train_dir, saying so;
- TensorBoard event files, and `.lock` while a train.py run holds it.

Checkpoints are found from their files, never from TensorFlow's `checkpoint` index file (which
holds paths that break when the folder moves). train.py still writes that file, with relative
paths, for TensorBoard and other TF tools. A checkpoint whose data is shorter than its index says
(a copy cut short) is skipped with a warning in favour of the newest complete one.

TensorFlow's checkpoint reader and Saver read a checkpoint path as a glob pattern, so they cannot
open one in a folder named like `runs/bs[32]`: `tf_path` gives them a path without glob
characters to the same files (a symbolic link, for this process only).
"""
import atexit
import contextlib
import glob
import json
import math
import os
import re
import shutil
import sys
import tempfile

import tensorflow.compat.v1 as tf
from absl import logging

import cli
from data import atomic, harrison
from nets import model

CONFIG_FILE = "train_config.json"
VOCAB_FILE = harrison.VOCAB_FILE
CHECKPOINT_BASENAME = "model.ckpt"
LOCK_FILE = ".lock"
BEST_FILE = "best.json"
# The fields of train_config.json that define the model's variables, inputs and outputs: a
# train_dir made with other values cannot be resumed, nor scored as if it were this model.
MODEL_FIELDS = ("backbone", "depth_multiplier", "num_tags", "loss", "image_size")
_CHECKPOINT_INDEX = re.compile(r"^model\.ckpt-(\d+)\.index$")
_STEP_SUFFIX = re.compile(r"-(\d+)$")
_GLOB_CHARACTERS = re.compile(r"[*?[\]]")
_aliases = {}  # folder -> a link to it whose path has no glob characters


class TrainDirError(cli.UserError):
    """A train_dir or checkpoint that cannot be used."""


# ---------------------------------------------------------------------- config and vocabulary

def load(train_dir):
    """(config dict from train_config.json, vocab list from vocab.txt) of a train_dir."""
    config_path = os.path.join(train_dir, CONFIG_FILE)
    for name in (CONFIG_FILE, VOCAB_FILE):
        if not os.path.isfile(os.path.join(train_dir, name)):
            raise TrainDirError(f"{train_dir} is not a train_dir of train.py: {name} is missing")
    try:
        with open(config_path, encoding="utf-8") as stream:
            config = json.load(stream)
    except ValueError as error:
        raise TrainDirError(f"{config_path} is not valid JSON: {error}") from None
    missing = [field for field in MODEL_FIELDS
               if not isinstance(config, dict) or field not in config]
    if missing:
        raise TrainDirError(f"{config_path} lacks {', '.join(missing)}: not a train_config of "
                            "this version of train.py")
    problem = model.config_problem(config)
    if problem:
        raise TrainDirError(f"{config_path}: {problem}")
    try:  # the train_dir's vocab.txt is the records' one, copied: the same reader and checks
        vocab = harrison.load_records_vocab(train_dir)
    except harrison.FormatError as error:
        raise TrainDirError(str(error)) from None
    if len(vocab) != config["num_tags"]:
        raise TrainDirError(f"{train_dir}: vocab.txt has {len(vocab)} tags but {CONFIG_FILE} "
                            f"says num_tags={config['num_tags']}")
    return config, vocab


def vocab_difference(expected, actual):
    """None when the two vocabularies are the same, else where they first differ (one line)."""
    if expected == actual:
        return None
    if len(expected) != len(actual):
        changed = next((i for i, (a, b) in enumerate(zip(expected, actual)) if a != b),
                       min(len(expected), len(actual)))
        return f"{len(expected)} tags vs {len(actual)}, first difference at line {changed + 1}"
    first = next(i for i, (a, b) in enumerate(zip(expected, actual)) if a != b)
    return f"line {first + 1}: tag id {first} is {expected[first]!r} vs {actual[first]!r}"


def check_compatible(train_dir, config, vocab):
    """TrainDirError when `train_dir` holds checkpoints of another model or vocabulary. A
    train_dir without checkpoints binds nothing: a failed first attempt may be retried."""
    checkpoints = list_checkpoints(train_dir)
    if not checkpoints:
        return
    if not os.path.exists(os.path.join(train_dir, CONFIG_FILE)):
        raise TrainDirError(f"{train_dir} holds checkpoints but no {CONFIG_FILE}; "
                            "use a new --train_dir")
    old_config, old_vocab = load(train_dir)
    for field in MODEL_FIELDS:
        if old_config.get(field) != config[field]:
            raise TrainDirError(
                f"{train_dir} was trained with {field}={old_config.get(field)!r}, not "
                f"{config[field]!r}; use a new --train_dir (or the same settings to resume)")
    difference = vocab_difference(old_vocab, vocab)
    if difference:
        raise TrainDirError(f"{train_dir} was trained with another vocabulary than the "
                            f"records' ({difference}); use a new --train_dir")


def prepare(train_dir, config, vocab):
    """Checks, before a run writes anything, that train_dir holds nothing of another model and
    that its best.json, if any, reads. Only under the train_dir's lock (`exclusive`)."""
    check_compatible(train_dir, config, vocab)
    best(train_dir)


def record_config(train_dir, config, vocab):
    """Writes vocab.txt and train_config.json (atomically) when a run is about to train: the
    train_dir alone is then enough to use the model. A run that trains nothing leaves them as
    they were (evaluate.py scores the records_dir named there). Only under the lock."""
    try:
        harrison.write_vocab(os.path.join(train_dir, VOCAB_FILE), vocab)
        atomic.write_text(os.path.join(train_dir, CONFIG_FILE),
                          json.dumps(config, indent=2, sort_keys=True) + "\n")
    except OSError as error:
        raise TrainDirError(f"cannot write to {train_dir}: {error.strerror or error}") from None


@contextlib.contextmanager
def exclusive(train_dir):
    """Holds the train_dir's lock for one training run (the folder is made if need be): a
    second run refuses at once. The OS releases the lock when its process dies, so a killed run
    never leaves it stuck."""
    if os.path.exists(train_dir) and not os.path.isdir(train_dir):
        raise TrainDirError(f"--train_dir {train_dir} is a file, not a folder")
    try:
        os.makedirs(train_dir, exist_ok=True)
    except OSError as error:
        raise TrainDirError(f"cannot write to {train_dir}: {error.strerror or error}") from None

    def busy(holder):
        return TrainDirError(f"{train_dir} is in use by another train.py ({holder}); wait for "
                             "it to finish or use another --train_dir")

    with atomic.exclusive(os.path.join(train_dir, LOCK_FILE), busy) as locked:
        if not locked:
            logging.warning("%s cannot be locked on this file system: make sure only one "
                            "train.py uses it", train_dir)
        yield


# ------------------------------------------------------------------------------- checkpoints

def tf_path(path):
    """`path` as TensorFlow's checkpoint functions can take it (see the module docstring)."""
    directory, name = os.path.split(os.path.abspath(path))
    if not _GLOB_CHARACTERS.search(directory):
        return path
    if directory not in _aliases:
        root = tempfile.mkdtemp(prefix="train_dir-link-")
        atexit.register(shutil.rmtree, root, True)
        _aliases[directory] = os.path.join(root, "folder")
        os.symlink(directory, _aliases[directory])
    return os.path.join(_aliases[directory], name)


def checkpoint_prefix(train_dir, step):
    return os.path.join(train_dir, f"{CHECKPOINT_BASENAME}-{step}")


def remove_partial_checkpoints(train_dir):
    """Removes what an interrupted save left: TensorFlow writes a checkpoint's parts into
    `<prefix>_temp*/` and the `checkpoint` file as `*.tempstate*` before renaming them. Only
    while the train_dir's lock is held (no save of another run can be under way)."""
    for path in glob.glob(os.path.join(glob.escape(train_dir), f"{CHECKPOINT_BASENAME}-*_temp*")):
        shutil.rmtree(path, ignore_errors=True) if os.path.isdir(path) else os.remove(path)
    for path in glob.glob(os.path.join(glob.escape(train_dir), "*.tempstate*")):
        os.remove(path)


def list_checkpoints(train_dir):
    """[(step, prefix)] of the train_dir's checkpoints, oldest first, from the files there."""
    if not os.path.isdir(train_dir):
        return []
    found = []
    for name in os.listdir(train_dir):
        match = _CHECKPOINT_INDEX.match(name)
        prefix = os.path.join(train_dir, name[:-len(".index")])
        if match and glob.glob(glob.escape(prefix) + ".data-*"):
            found.append((int(match.group(1)), prefix))
    return sorted(found)


def damage(prefix):
    """None when the checkpoint reads, else a one-line reason: no index, or data shorter than
    the tensors the index lists (a copy cut short)."""
    try:
        reader = tf.train.load_checkpoint(tf_path(prefix))
    except (tf.errors.OpError, ValueError) as error:
        return cli.first_line(error)
    shapes, dtypes = reader.get_variable_to_shape_map(), reader.get_variable_to_dtype_map()
    needed = sum(math.prod(shapes[name]) * dtypes[name].size for name in shapes
                 if dtypes[name] != tf.string)
    present = sum(os.path.getsize(path) for path in glob.glob(glob.escape(prefix) + ".data-*"))
    if present < needed:
        return f"its data holds {present} bytes of the {needed} its index lists (truncated)"
    return None


def latest_checkpoint(train_dir):
    """The prefix of the newest usable checkpoint, None when there is none at all. Newer ones
    that are damaged are reported (one warning line each) and passed over; when every one is,
    TrainDirError names them: a train_dir that holds checkpoints is never taken as empty."""
    checkpoints = list_checkpoints(train_dir)
    reasons = []
    for step, prefix in reversed(checkpoints):
        reason = damage(prefix)
        if reason is None:
            return prefix
        logging.warning("%s is unusable (%s); trying the checkpoint before it", prefix, reason)
        reasons.append(f"{os.path.basename(prefix)}: {reason}")
    if reasons:
        raise TrainDirError(f"no usable checkpoint in {train_dir}: {'; '.join(reasons)}")
    return None


def usable_checkpoints(train_dir):
    """The prefixes of every usable checkpoint, oldest first; a damaged one is passed over with
    a warning line, and TrainDirError says when none is usable."""
    usable = []
    for _, prefix in list_checkpoints(train_dir):
        reason = damage(prefix)
        if reason:
            logging.warning("%s is unusable (%s); skipping it", prefix, reason)
        else:
            usable.append(prefix)
    if not usable:
        raise TrainDirError(f"no usable checkpoint in {train_dir}")
    return usable


def remove_checkpoint(prefix):
    """Deletes a checkpoint's files (its index first: without it, nothing lists the rest)."""
    for path in [prefix + ".index"] + glob.glob(glob.escape(prefix) + ".data-*"):
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)


def checkpoint_step(prefix):
    """The step of a checkpoint: its -<step> suffix, else its global_step variable."""
    match = _STEP_SUFFIX.search(prefix)
    if match:
        return int(match.group(1))
    try:
        return int(tf.train.load_checkpoint(tf_path(prefix)).get_tensor("global_step"))
    except (tf.errors.OpError, ValueError):
        raise TrainDirError(f"cannot tell the step of checkpoint {prefix}") from None


def record_best(directory, step, metric, value, variant=None, variants=None):
    """Writes best.json: the checkpoint of `step` is the best so far by val `metric` (`value`,
    scored as during training); with the test-time `variant` chosen for it on val (a dict,
    nets/variants.py) and every variant's val scores (`variants`: [{"variant", "scores"}])."""
    chosen = {"step": int(step), "metric": metric, "value": float(value)}
    if variant is not None:
        chosen.update(variant=variant, variants=variants)
    atomic.write_text(os.path.join(directory, BEST_FILE), json.dumps(chosen, indent=1) + "\n")


def best(directory):
    """best.json as a dict (step, metric, value), or None when there is none. TrainDirError when
    it is there but damaged (cut short, or not what `record_best` writes): ignored, it would
    put the best checkpoint back into rotation, where a later save deletes it."""
    path = os.path.join(directory, BEST_FILE)
    try:
        with open(path, "rb") as stream:
            data = stream.read(1 << 16)
    except FileNotFoundError:
        return None
    except OSError as error:
        raise TrainDirError(f"cannot read {path}: {error.strerror or error}") from None
    try:
        chosen = json.loads(data.decode("utf-8"))
    except ValueError:
        chosen = None
    value = chosen.get("value") if isinstance(chosen, dict) else None
    if not (isinstance(chosen, dict) and model.is_whole_number(chosen.get("step"))
            and chosen["step"] >= 0 and isinstance(chosen.get("metric"), str)
            and isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value)):
        raise TrainDirError(
            f"{path} is damaged (not the step, metric and value train.py writes): restore it, "
            "or delete it to fall back on the newest checkpoint (train.py then records the "
            "best one again, from its next validation on)")
    return chosen


def default_checkpoint(directory):
    """(prefix, why) of the checkpoint a train_dir stands for: the best one on the val split
    when train.py recorded one and it is usable, else the newest usable one."""
    chosen = best(directory)
    if chosen:
        prefix = checkpoint_prefix(directory, chosen["step"])
        if os.path.isfile(prefix + ".index") and damage(prefix) is None:
            return prefix, (f"the best checkpoint on the val split ({chosen['metric']} "
                            f"{100 * chosen['value']:.2f})")
        logging.warning("%s names %s, which is missing or unusable; using the newest "
                        "checkpoint", os.path.join(directory, BEST_FILE), prefix)
    return latest_checkpoint(directory), "the newest checkpoint"


def resolve(path):
    """(checkpoint prefix, train_dir) for a train_dir (the checkpoint `default_checkpoint`
    picks, which a log line names) or one checkpoint inside a train_dir, given as its prefix
    (work/train/model.ckpt-500) or one of its files."""
    if os.path.isdir(path):
        prefix, why = default_checkpoint(path)
        if prefix is None:
            raise TrainDirError(f"no checkpoint in {path} "
                                f"(train.py writes {CHECKPOINT_BASENAME}-<step>)")
        # On stderr: the scripts' stdout is their results (predict.py's may be JSON or CSV).
        print(f"{path}: using {os.path.basename(prefix)}, {why}", file=sys.stderr)
        return prefix, path
    prefix = re.sub(r"\.(index|data-\d+-of-\d+)$", "", path)
    if os.path.isfile(prefix + ".index"):
        reason = damage(prefix)
        if reason:
            raise TrainDirError(f"checkpoint {prefix} is unusable: {reason}")
        return prefix, os.path.dirname(prefix) or "."
    raise TrainDirError(f"no checkpoint at {path} (give a train_dir or a prefix such as "
                        f"{os.path.join('work', 'train', CHECKPOINT_BASENAME)}-1000)")
