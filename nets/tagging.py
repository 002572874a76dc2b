"""The tagging model: a slim backbone with one logit per tag, its losses and its train_dir.

- `BACKBONES`: backbone name -> slim network function + arg_scope. Variable names stay slim's
  (`InceptionV3/...`), so the official ImageNet checkpoints restore (nets/warm_start.py).
- `build_logits`: the backbone with a `num_tags` head (and InceptionV3's auxiliary head re-sized
  to `num_tags` when training).
- Losses. "sigmoid" (default): independent sigmoid cross-entropy per tag on multi-hot targets,
  computed from the logits, SUMMED over tags and AVERAGED over the batch. Summing over tags keeps
  the per-image loss on the scale of a softmax cross-entropy, so slim's learning rates, its
  RMSProp epsilon of 1.0 and its weight decay keep their meaning; a mean over 997 tags would
  shrink every gradient ~1000x. "softmax": softmax cross-entropy against the targets normalised
  to sum to 1 (Mahajan et al. 2018, the recipe that won for hashtag pretraining), averaged over
  the batch. The auxiliary head adds the same loss with weight 0.4 (slim's recipe), and the
  arg_scope's weight decay adds its L2 terms.
- train_dir helpers: `load_train_dir`, `resolve_checkpoint`, `check_train_dir`.
"""
import collections
import inspect
import json
import math
import os

from nets import compat

slim = compat.import_slim()
import tensorflow.compat.v1 as tf  # noqa: E402
from tf_slim.nets import inception  # noqa: E402

from data import harrison  # noqa: E402

CONFIG_NAME = "train_config.json"
VOCAB_NAME = harrison.VOCAB_FILE  # the records' vocab.txt, copied into the train_dir
CHECKPOINT_BASENAME = "model.ckpt"
LOSSES = ("sigmoid", "softmax")
AUX_LOSS_WEIGHT = 0.4  # slim's train_image_classifier weight for InceptionV3's AuxLogits
# Smallest input on which InceptionV3's auxiliary head builds (its 5x5 VALID pool needs a 5x5
# Mixed_6e map); measured with tf-slim 1.1.0.
AUX_MIN_IMAGE_SIZE = 107

Backbone = collections.namedtuple(
    "Backbone", "network arg_scope scope default_image_size has_aux_logits")

BACKBONES = {
    "inception_v3": Backbone(inception.inception_v3, inception.inception_v3_arg_scope,
                             "InceptionV3", 299, True),
    "inception_v2": Backbone(inception.inception_v2, inception.inception_v2_arg_scope,
                             "InceptionV2", 224, False),
}

# The fields of train_config.json that define the model's variables and outputs: a train_dir
# made with other values cannot be resumed (or evaluated as if it were this model).
MODEL_FIELDS = ("backbone", "depth_multiplier", "num_tags", "loss")


class TrainDirError(ValueError):
    """A train_dir or checkpoint that cannot be used (a one-line message for the user)."""


def get_backbone(name):
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose from {', '.join(sorted(BACKBONES))}")
    return BACKBONES[name]


def uses_aux_logits(backbone, image_size, is_training, aux_loss_weight=AUX_LOSS_WEIGHT):
    """Whether the auxiliary head is built: training only, when the backbone has one, it is
    weighted and the image is large enough for it."""
    return bool(is_training and aux_loss_weight > 0 and get_backbone(backbone).has_aux_logits
                and image_size >= AUX_MIN_IMAGE_SIZE)


def build_logits(images, num_tags, backbone="inception_v3", depth_multiplier=1.0,
                 is_training=False, weight_decay=4e-5, batch_norm_decay=0.9997,
                 dropout_keep_prob=0.8, aux_logits=None):
    """(logits [B, num_tags], end_points) of `backbone` on images in [-1, 1].

    `end_points["AuxLogits"]` ([B, num_tags]) exists when the auxiliary head is built
    (`aux_logits`, default: `uses_aux_logits(...)`). Variables are slim's, under the backbone's
    scope; the weight decay goes to tf's REGULARIZATION_LOSSES collection.
    """
    spec = get_backbone(backbone)
    if aux_logits is None:
        aux_logits = uses_aux_logits(backbone, images.shape[1] or 0, is_training)
    kwargs = {"create_aux_logits": aux_logits} if spec.has_aux_logits else {}
    scope_args = {"weight_decay": weight_decay, "batch_norm_decay": batch_norm_decay}
    accepted = inspect.signature(spec.arg_scope).parameters  # inception_v2's has no BN decay
    with slim.arg_scope(spec.arg_scope(**{k: v for k, v in scope_args.items() if k in accepted})):
        logits, end_points = spec.network(
            images, num_classes=num_tags, is_training=is_training,
            dropout_keep_prob=dropout_keep_prob, depth_multiplier=depth_multiplier,
            scope=spec.scope, **kwargs)
    return logits, end_points


def scores_from_logits(logits, loss):
    """Per-tag scores: sigmoid probabilities ("sigmoid") or a softmax over tags ("softmax")."""
    if loss == "sigmoid":
        return tf.sigmoid(logits)
    if loss == "softmax":
        return tf.nn.softmax(logits)
    raise ValueError(f"unknown loss {loss!r}; choose from {', '.join(LOSSES)}")


def tagging_loss(logits, labels, loss):
    """Mean over the batch of the per-image loss (see the module docstring), float32 scalar."""
    logits = tf.cast(logits, tf.float32)
    if loss == "sigmoid":
        per_tag = tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits)
        return tf.reduce_mean(tf.reduce_sum(per_tag, axis=1))
    if loss == "softmax":
        targets = labels / tf.maximum(tf.reduce_sum(labels, axis=1, keepdims=True), 1.0)
        return tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(
            labels=targets, logits=logits))
    raise ValueError(f"unknown loss {loss!r}; choose from {', '.join(LOSSES)}")


def total_loss(logits, end_points, labels, loss, aux_loss_weight=AUX_LOSS_WEIGHT):
    """(total, parts): the tagging loss + aux_loss_weight * aux loss (when the auxiliary head
    was built) + the regularization losses in the graph; parts = {"tags", "aux", "reg"}."""
    parts = {"tags": tagging_loss(logits, labels, loss)}
    parts["aux"] = (tagging_loss(end_points["AuxLogits"], labels, loss)
                    if "AuxLogits" in end_points else tf.constant(0.0))
    regularization = tf.losses.get_regularization_losses()
    parts["reg"] = tf.add_n(regularization) if regularization else tf.constant(0.0)
    return parts["tags"] + aux_loss_weight * parts["aux"] + parts["reg"], parts


def precision_at_1(logits, labels):
    """Fraction of images whose highest-scoring tag is one of their tags."""
    top = tf.argmax(logits, axis=1, output_type=tf.int32)
    hits = tf.gather(labels, top, axis=1, batch_dims=1)
    return tf.reduce_mean(hits)


def variables_to_train(trainable_scopes=None):
    """Trainable variables under any of `trainable_scopes` (comma-separated), or all of them."""
    variables = tf.trainable_variables()
    scopes = [s.strip() for s in (trainable_scopes or "").split(",") if s.strip()]
    if not scopes:
        return variables
    chosen = [v for v in variables if any(v.op.name.startswith(s) for s in scopes)]
    if not chosen:
        raise ValueError(f"--trainable_scopes={trainable_scopes} matches no variable "
                         f"(names look like {variables[0].op.name})")
    return chosen


def learning_rate_schedule(global_step, base_rate, total_steps, warmup_steps=0,
                           decay="exponential", decay_steps=1000, decay_factor=0.94,
                           end_rate=0.0001):
    """Linear warm-up from 0 over `warmup_steps`, then `decay`: "exponential" (slim's default,
    staircase x decay_factor every decay_steps), "cosine" (to end_rate at total_steps) or
    "fixed"."""
    step = tf.cast(global_step, tf.float32)
    after_warmup = tf.maximum(step - warmup_steps, 0.0)
    if decay == "exponential":
        rate = base_rate * tf.pow(decay_factor, tf.floor(after_warmup / max(decay_steps, 1)))
    elif decay == "cosine":
        progress = tf.minimum(after_warmup / max(total_steps - warmup_steps, 1), 1.0)
        rate = end_rate + (base_rate - end_rate) * 0.5 * (1.0 + tf.cos(math.pi * progress))
    elif decay == "fixed":
        rate = tf.constant(base_rate, tf.float32)
    else:
        raise ValueError(f"unknown learning-rate decay {decay!r}")
    if warmup_steps > 0:
        rate = tf.where(step < warmup_steps, base_rate * (step + 1.0) / warmup_steps, rate)
    return rate


def make_optimizer(name, learning_rate, momentum=0.9, rmsprop_decay=0.9, epsilon=1.0):
    """slim train_image_classifier's optimizers with its defaults (RMSProp epsilon 1.0)."""
    if name == "rmsprop":
        return tf.train.RMSPropOptimizer(learning_rate, decay=rmsprop_decay, momentum=momentum,
                                         epsilon=epsilon)
    if name == "momentum":
        return tf.train.MomentumOptimizer(learning_rate, momentum=momentum)
    if name == "adam":
        return tf.train.AdamOptimizer(learning_rate)
    raise ValueError(f"unknown optimizer {name!r}; choose from rmsprop, momentum, adam")


# --------------------------------------------------------------------------- train_dir


def load_train_dir(train_dir):
    """(config dict from train_config.json, vocab list from vocab.txt) of a train_dir."""
    config_path = os.path.join(train_dir, CONFIG_NAME)
    vocab_path = os.path.join(train_dir, VOCAB_NAME)
    for path in (config_path, vocab_path):
        if not os.path.isfile(path):
            raise TrainDirError(f"{train_dir} is not a train_dir of train.py: "
                                f"{os.path.basename(path)} is missing")
    with open(config_path, encoding="utf-8") as f:
        config = json.load(f)
    try:  # the train_dir's vocab.txt is the records' one, copied: the same reader and checks
        vocab = harrison.load_records_vocab(train_dir)
    except harrison.FormatError as error:
        raise TrainDirError(str(error)) from None
    return config, vocab


def resolve_checkpoint(path):
    """(checkpoint prefix, train_dir) for a train_dir (its latest checkpoint) or one checkpoint
    prefix inside a train_dir (e.g. work/train/model.ckpt-500)."""
    if os.path.isdir(path):
        prefix = tf.train.latest_checkpoint(path)
        if prefix is None:
            raise TrainDirError(f"no checkpoint in {path} "
                                f"(train.py writes {CHECKPOINT_BASENAME}-<step>)")
        return prefix, path
    if tf.train.checkpoint_exists(path):
        return path, os.path.dirname(path) or "."
    raise TrainDirError(f"no checkpoint at {path} (give a train_dir or a prefix such as "
                        f"{os.path.join('work', 'train', CHECKPOINT_BASENAME)}-1000)")


def check_train_dir(train_dir, config, vocab):
    """Raise TrainDirError when `train_dir` already holds checkpoints of another model or
    vocabulary."""
    config_path = os.path.join(train_dir, CONFIG_NAME)
    has_checkpoint = os.path.isdir(train_dir) and tf.train.latest_checkpoint(train_dir)
    if not has_checkpoint:
        return  # nothing trained yet: a previous attempt's settings do not bind this run
    if not os.path.exists(config_path):
        raise TrainDirError(f"{train_dir} holds checkpoints but no {CONFIG_NAME}; "
                            "use a new --train_dir")
    old_config, old_vocab = load_train_dir(train_dir)
    for field in MODEL_FIELDS:
        if old_config.get(field) != config[field]:
            raise TrainDirError(
                f"{train_dir} was trained with {field}={old_config.get(field)!r}, not "
                f"{config[field]!r}; use a new --train_dir (or the same settings to resume)")
    if old_vocab != vocab:
        changed = next((i for i, (a, b) in enumerate(zip(old_vocab, vocab)) if a != b),
                       min(len(old_vocab), len(vocab)))
        raise TrainDirError(
            f"{train_dir} was trained with another vocabulary ({len(old_vocab)} tags, first "
            f"difference at line {changed + 1}) than the records' ({len(vocab)} tags); "
            "use a new --train_dir")
