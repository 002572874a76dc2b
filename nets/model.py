"""The tagging model: a slim backbone with one logit per tag, and its losses.

- `BACKBONES`: backbone name -> slim network function + arg_scope (slim's nets_factory idea).
  Variable names stay slim's (`InceptionV3/...`), so the official ImageNet checkpoints restore
  (nets/warm_start.py).
- `build_logits`: the backbone with a `num_tags` head (and InceptionV3's auxiliary head re-sized
  to `num_tags` when training). `build_scores`: THE scoring model of a train_config (inference
  mode), which evaluate.py, predict.py and export.py all use.
- Losses. "sigmoid" (default): independent sigmoid cross-entropy per tag on multi-hot targets,
  computed from the logits, SUMMED over tags and AVERAGED over the batch. Summing over tags keeps
  the per-image loss on the scale of a softmax cross-entropy, so slim's learning rates, its
  RMSProp epsilon of 1.0 and its weight decay keep their meaning; a mean over 997 tags would
  shrink every gradient ~1000x. "softmax": softmax cross-entropy against the targets normalised
  to sum to 1 (Mahajan et al. 2018, the recipe that won for hashtag pretraining), averaged over
  the batch. The auxiliary head adds the same loss with weight 0.4 (slim's recipe), and the
  arg_scope's weight decay adds its L2 terms.
"""
import collections
import inspect

import numpy as np
import tensorflow.compat.v1 as tf
import tf_slim as slim
from tf_slim.nets import inception

from nets import compat

LOSSES = ("sigmoid", "softmax")
# The input sizes (pixels) and channel multipliers a model may have: InceptionV3 builds from 75
# px; beyond 1024 px and 4x the channels, one photo's activations outgrow an accelerator.
IMAGE_SIZE_RANGE = (75, 1024)
MAX_DEPTH_MULTIPLIER = 4.0
AUX_LOSS_WEIGHT = 0.4  # slim's train_image_classifier weight for InceptionV3's AuxLogits
# Smallest input on which InceptionV3's auxiliary head builds (its 5x5 VALID pool needs a 5x5
# Mixed_6e map); measured with tf-slim 1.1.0.
AUX_MIN_IMAGE_SIZE = 107

# default_image_size: the input size the backbone was designed (and its ImageNet checkpoint
# trained) for, train.py's --image_size when none is given. heads: the scopes of the layers
# that output one logit per tag (the main head, and the auxiliary one where there is one).
# last_block: the end point whose global average the main head reads (through dropout).
Backbone = collections.namedtuple(
    "Backbone", "network arg_scope scope default_image_size has_aux_logits heads last_block")

BACKBONES = {
    "inception_v3": Backbone(inception.inception_v3, inception.inception_v3_arg_scope,
                             "InceptionV3", 299, True,
                             ("InceptionV3/Logits/Conv2d_1c_1x1",
                              "InceptionV3/AuxLogits/Conv2d_2b_1x1"), "Mixed_7c"),
    "inception_v2": Backbone(inception.inception_v2, inception.inception_v2_arg_scope,
                             "InceptionV2", 224, False, ("InceptionV2/Logits/Conv2d_1c_1x1",),
                             "Mixed_5c"),
}


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
    compat.apply()
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


def build_features(images, config):
    """The frozen backbone's image features [B, F] (inference mode): the global average of its
    last block, which the main head maps to one logit per tag."""
    _, end_points = build_logits(images, int(config["num_tags"]), config["backbone"],
                                 float(config["depth_multiplier"]), is_training=False)
    return tf.reduce_mean(end_points[get_backbone(config["backbone"]).last_block], axis=[1, 2])


def build_scores(images, config):
    """Per-tag scores [B, num_tags] of the model a train_config describes, in inference mode
    (batch norm on its moving averages, no dropout, no auxiliary head)."""
    logits, _ = build_logits(images, int(config["num_tags"]), config["backbone"],
                             float(config["depth_multiplier"]), is_training=False)
    return scores_from_logits(logits, config["loss"])


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


def prior_biases(tag_counts, num_images, loss):
    """The logit biases of a model that knows only how often each tag occurs: log(p / (1 - p))
    for the sigmoid loss, log p for the softmax one. Starting a new head there (with zero
    weights) makes its first loss the prior's, not T * ln 2 (691 for HARRISON's 997 tags)."""
    counts = np.asarray(tag_counts, dtype=np.float64)
    if loss == "sigmoid":
        # Clipped half an image from 0 and 1: a tag the split never shows keeps a finite bias.
        p = np.clip(counts / max(num_images, 1), 0.5 / max(num_images, 1),
                    1.0 - 0.5 / max(num_images, 1))
        return np.log(p / (1.0 - p)).astype(np.float32)
    if loss == "softmax":
        p = (counts + 0.5) / (counts.sum() + 0.5 * len(counts))
        return np.log(p).astype(np.float32)
    raise ValueError(f"unknown loss {loss!r}; choose from {', '.join(LOSSES)}")


def head_variables(backbone):
    """{head scope: (weights, biases)} of the graph's tag heads for `backbone`."""
    variables = {v.op.name: v for v in tf.global_variables()}
    return {scope: (variables[scope + "/weights"], variables[scope + "/biases"])
            for scope in get_backbone(backbone).heads if scope + "/weights" in variables}


def initialize_heads_op(backbone, biases, skip=(), zero_weights=True):
    """An op setting the graph's tag heads (but those whose scope is in `skip`) to `biases` and,
    with `zero_weights`, zero weights: their logits are then the prior's for every image, and
    training moves them from there (the zero head of BiT, Kolesnikov et al. 2020, for a
    pretrained backbone). A backbone trained from scratch keeps slim's random head weights: a
    zero head would hold back its first gradients."""
    ops = []
    for scope, (weights, bias) in head_variables(backbone).items():
        if scope not in skip:
            ops.append(bias.assign(tf.constant(biases)))
            if zero_weights:
                ops.append(weights.assign(tf.zeros_like(weights)))
    return tf.group(ops)


def is_whole_number(value):
    """An int that is not a bool (JSON true is not a step or a size)."""
    return isinstance(value, int) and not isinstance(value, bool)


def config_problem(config):
    """What makes the model fields of a train_config (nets/train_dir.py) unusable, in one line,
    or None: a model is built from them (a received archive's too), so each must be a value
    train.py could have written."""
    backbone, loss = config["backbone"], config["loss"]
    size, depth, tags = config["image_size"], config["depth_multiplier"], config["num_tags"]
    low, high = IMAGE_SIZE_RANGE
    if not isinstance(backbone, str) or backbone not in BACKBONES:
        return f"backbone {backbone!r} is not one of {', '.join(sorted(BACKBONES))}"
    if not isinstance(loss, str) or loss not in LOSSES:
        return f"loss {loss!r} is not one of {', '.join(LOSSES)}"
    if not is_whole_number(size) or not low <= size <= high:
        return f"image_size {size!r} is not a whole number of pixels in [{low}, {high}]"
    if not (is_whole_number(depth) or isinstance(depth, float)) or not (
            0 < depth <= MAX_DEPTH_MULTIPLIER):
        return (f"depth_multiplier {depth!r} is not a number in (0, "
                f"{MAX_DEPTH_MULTIPLIER:g}]")
    if not is_whole_number(tags) or tags < 1:
        return f"num_tags {tags!r} is not a positive whole number"
    return None
