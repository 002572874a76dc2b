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
MIN_DEPTH = 16  # slim's min_depth: no layer narrower than this, whatever the depth multiplier

# base: slim's network up to its last block (the head is ours, `tag_heads`); scope: slim's
# variable scope; default_image_size: the input size the backbone was designed (and its ImageNet
# checkpoint trained) for, train.py's --image_size when none is given; min_image_size: the
# smallest input its last block builds on (measured); heads: the layers that output one logit
# per tag (the main head, then the auxiliary one where there is one); last_block: the end point
# whose global mean the main head reads (through dropout); aux_block: the auxiliary head's input.
Backbone = collections.namedtuple(
    "Backbone", "base arg_scope scope default_image_size min_image_size heads last_block "
                "aux_block")

BACKBONES = {
    "inception_v3": Backbone(inception.inception_v3_base, inception.inception_v3_arg_scope,
                             "InceptionV3", 299, 75,
                             ("InceptionV3/Logits/Conv2d_1c_1x1",
                              "InceptionV3/AuxLogits/Conv2d_2b_1x1"), "Mixed_7c", "Mixed_6e"),
    "inception_v2": Backbone(inception.inception_v2_base, inception.inception_v2_arg_scope,
                             "InceptionV2", 224, 32, ("InceptionV2/Logits/Conv2d_1c_1x1",),
                             "Mixed_5c", None),
}


def get_backbone(name):
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose from {', '.join(sorted(BACKBONES))}")
    return BACKBONES[name]


def uses_aux_logits(backbone, image_size, is_training, aux_loss_weight=AUX_LOSS_WEIGHT):
    """Whether the auxiliary head is built: training only, when the backbone has one, it is
    weighted and the image is large enough for it."""
    return bool(is_training and aux_loss_weight > 0 and get_backbone(backbone).aux_block
                and image_size >= AUX_MIN_IMAGE_SIZE)


def aux_scope(backbone):
    """The auxiliary head's variable scope ("" when the backbone has none)."""
    spec = get_backbone(backbone)
    return f"{spec.scope}/AuxLogits" if spec.aux_block else ""


def in_scopes(name, scopes):
    """Whether a variable or scope `name` is under one of `scopes` (comma-separated): starts
    with one, as slim's --trainable_scopes and --checkpoint_exclude_scopes match."""
    return any(name.startswith(scope) for scope in split_scopes(scopes))


def split_scopes(scopes):
    return [scope.strip() for scope in (scopes or "").split(",") if scope.strip()]


def build_logits(images, num_tags, backbone="inception_v3", depth_multiplier=1.0,
                 is_training=False, weight_decay=4e-5, batch_norm_decay=0.9997,
                 dropout_keep_prob=0.8, aux_logits=None, trainable_scopes=None):
    """(logits [B, num_tags], end_points) of `backbone` on images in [-1, 1]: slim's network up
    to its last block, then our tag heads (`tag_heads`), at any image size from the backbone's
    smallest up.

    `end_points["AuxLogits"]` ([B, num_tags]) exists when the auxiliary head is built
    (`aux_logits`, default: `uses_aux_logits(...)`), `end_points["Features"]` ([B, F]) is the
    global mean the main head reads. With `trainable_scopes`, only the layers under them are in
    training mode: the rest (batch norm on its moving averages, no updates) is frozen. Variables
    are slim's, under the backbone's scope; the weight decay goes to REGULARIZATION_LOSSES.
    """
    compat.apply()
    spec = get_backbone(backbone)
    if aux_logits is None:
        aux_logits = uses_aux_logits(backbone, images.shape[1] or 0, is_training)

    def training(scope_name):  # whether the layer under this variable scope trains
        return bool(is_training) and (not trainable_scopes
                                      or in_scopes(scope_name, trainable_scopes))

    def batch_norm(inputs, **params):  # the arg_scope's, in the mode of the layer it ends
        return slim.batch_norm(inputs, is_training=training(tf.get_variable_scope().name),
                               **params)

    scope_args = {"weight_decay": weight_decay, "batch_norm_decay": batch_norm_decay}
    accepted = inspect.signature(spec.arg_scope).parameters  # inception_v2's has no BN decay
    with slim.arg_scope(spec.arg_scope(**{k: v for k, v in scope_args.items() if k in accepted})):
        with slim.arg_scope([slim.conv2d, slim.separable_conv2d], normalizer_fn=batch_norm), \
                tf.variable_scope(spec.scope, values=[images]) as scope, compat.graph_equality():
            net, end_points = spec.base(images, scope=scope, depth_multiplier=depth_multiplier)
            logits = tag_heads(net, end_points, num_tags, spec, depth_multiplier,
                               dropout_keep_prob, training, aux_logits)
    return logits, end_points


def tag_heads(net, end_points, num_tags, spec, depth_multiplier, dropout_keep_prob, training,
              aux_logits):
    """THE tag head on the last block `net`: its global mean (end_points["Features"]), dropout,
    a 1x1 convolution to one logit per tag (slim's Logits/Conv2d_1c_1x1), for every backbone and
    image size; and, when asked, InceptionV3's auxiliary head on Mixed_6e, its output averaged
    likewise. Up to the size slim's fixed pools were made for (330 px for InceptionV3) the mean
    is exactly slim's pool; beyond, slim's pool would read a corner of the map. Returns logits."""
    if aux_logits:
        end_points["AuxLogits"] = _aux_head(end_points[spec.aux_block], num_tags,
                                            depth_multiplier, training)
    with tf.variable_scope("Logits") as scope:
        features = global_mean(net)
        end_points["Features"] = tf.squeeze(features, [1, 2])
        net = slim.dropout(features, keep_prob=dropout_keep_prob,
                           is_training=training(scope.name), scope="Dropout_1b")
        logits = slim.conv2d(net, num_tags, [1, 1], activation_fn=None, normalizer_fn=None,
                             scope="Conv2d_1c_1x1")
        return tf.squeeze(logits, [1, 2], name="SpatialSqueeze")


def _aux_head(net, num_tags, depth_multiplier, training):
    """InceptionV3's auxiliary head as slim builds it (its variable names and initializers, so
    an ImageNet checkpoint restores all but its last layer), its map averaged before the last
    1x1 convolution (1x1 already up to 330 px)."""
    depth = max(int(768 * depth_multiplier), MIN_DEPTH)
    with slim.arg_scope([slim.conv2d, slim.avg_pool2d], stride=1, padding="SAME"), \
            tf.variable_scope("AuxLogits"):
        net = slim.avg_pool2d(net, [5, 5], stride=3, padding="VALID", scope="AvgPool_1a_5x5")
        net = slim.conv2d(net, max(int(128 * depth_multiplier), MIN_DEPTH), [1, 1],
                          scope="Conv2d_1b_1x1")
        kernel = [min(net.shape[1], 5), min(net.shape[2], 5)]  # slim's, for small inputs
        net = slim.conv2d(net, depth, kernel, padding="VALID",
                          weights_initializer=tf.truncated_normal_initializer(stddev=0.01),
                          scope="Conv2d_2a_{}x{}".format(*kernel))
        net = slim.conv2d(global_mean(net), num_tags, [1, 1], activation_fn=None,
                          normalizer_fn=None,
                          weights_initializer=tf.truncated_normal_initializer(stddev=0.001),
                          scope="Conv2d_2b_1x1")
        return tf.squeeze(net, [1, 2], name="SpatialSqueeze")


def global_mean(net):
    """The mean over a [B, H, W, C] map's positions, as [B, 1, 1, C]: slim's VALID average pool
    of the whole map (the op its heads use, so a checkpoint scores as it did in slim's graph)."""
    if net.shape[1] is None or net.shape[2] is None:
        return tf.reduce_mean(net, axis=[1, 2], keepdims=True)
    return slim.avg_pool2d(net, [net.shape[1], net.shape[2]], stride=1, padding="VALID",
                           scope="AvgPool_1a_{}x{}".format(net.shape[1], net.shape[2]))


def build_features(images, config):
    """The frozen backbone's image features [B, F] (inference mode): the global mean of its
    last block, which the main head maps to one logit per tag (`tag_heads`)."""
    _, end_points = build_logits(images, int(config["num_tags"]), config["backbone"],
                                 float(config["depth_multiplier"]), is_training=False)
    return end_points["Features"]


def build_scores(images, config):
    """Per-tag scores [B, num_tags] of the model a train_config describes, in inference mode
    (batch norm on its moving averages, no dropout, no auxiliary head). With config["mirror"]
    (a test-time variant, nets/variants.py), each image's scores averaged with its mirror
    image's."""
    if config.get("mirror"):
        return mirrored_scores(images, config)[1]
    logits, _ = build_logits(images, int(config["num_tags"]), config["backbone"],
                             float(config["depth_multiplier"]), is_training=False)
    return scores_from_logits(logits, config["loss"])


def mirrored_scores(images, config):
    """(scores of the images, scores averaged with their mirror images'), [B, num_tags] each,
    from one run of the network on the images and their mirrors."""
    both = tf.concat([images, tf.image.flip_left_right(images)], axis=0)
    logits, _ = build_logits(both, int(config["num_tags"]), config["backbone"],
                             float(config["depth_multiplier"]), is_training=False)
    plain, mirrored = tf.split(scores_from_logits(logits, config["loss"]), 2, axis=0)
    return plain, (plain + mirrored) / 2.0


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
    crop = config.get("crop_size", size)  # an export's scoring config: nets/variants.py
    if not is_whole_number(crop) or not low <= crop <= high:
        return f"crop_size {crop!r} is not a whole number of pixels in [{low}, {high}]"
    if not (is_whole_number(depth) or isinstance(depth, float)) or not (
            0 < depth <= MAX_DEPTH_MULTIPLIER):
        return (f"depth_multiplier {depth!r} is not a number in (0, "
                f"{MAX_DEPTH_MULTIPLIER:g}]")
    if not is_whole_number(tags) or tags < 1:
        return f"num_tags {tags!r} is not a positive whole number"
    return None
