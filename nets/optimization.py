"""The learning-rate schedule and the optimizer of a training run.

- `schedule_length`: steps per epoch and the run's total steps, from the settings.
- `learning_rate_schedule`: linear warm-up, then exponential (slim's), cosine or fixed.
- `make_optimizer`: slim train_image_classifier's optimizers with its defaults.
- `build_optimizer`: both on the global step, with dynamic loss scaling under mixed precision.
"""
import math

import tensorflow.compat.v1 as tf

# The loss-scale state of mixed precision lives under this scope, so a run can resume across a
# GPU (mixed precision on) and a CPU (off).
LOSS_SCALE_SCOPE = "mixed_precision"
OPTIMIZERS = ("rmsprop", "momentum", "adam")
DECAYS = ("exponential", "cosine", "fixed")


def schedule_length(batch_size, train_images, max_steps=None, num_epochs=None):
    """(steps per epoch, total steps) of a run: `max_steps`, else `num_epochs` epochs."""
    steps_per_epoch = max(1, train_images // batch_size)
    total = max_steps or math.ceil(num_epochs * steps_per_epoch)
    return steps_per_epoch, total


def learning_rate_schedule(global_step, base_rate, total_steps, warmup_steps=0,
                           decay="exponential", decay_steps=1000, decay_factor=0.94,
                           end_fraction=0.01):
    """Linear warm-up from 0 over `warmup_steps`, then `decay`: "exponential" (slim's,
    staircase x decay_factor every decay_steps), "cosine" (to end_fraction x base_rate at
    total_steps) or "fixed"."""
    end_rate = end_fraction * base_rate
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
    raise ValueError(f"unknown optimizer {name!r}; choose from {', '.join(OPTIMIZERS)}")


def build_optimizer(settings, total_steps, steps_per_epoch, mixed_precision):
    """(optimizer, learning rate) of a run's settings: the schedule on the global step, and the
    optimizer (with dynamic loss scaling under mixed precision). Built once, outside the
    replicas: one loss scale and one set of slot variables for all of them."""
    learning_rate = learning_rate_schedule(
        tf.train.get_or_create_global_step(), settings["learning_rate"], total_steps,
        settings["warmup_steps"], settings["learning_rate_decay"],
        decay_steps=int(settings["num_epochs_per_decay"] * steps_per_epoch))
    optimizer = make_optimizer(settings["optimizer"], learning_rate,
                               momentum=settings["momentum"], epsilon=settings["rmsprop_epsilon"])
    if mixed_precision:
        # Scales the loss up before the float16 backward pass (and the gradients back down);
        # a step with overflowing gradients is skipped and the scale lowered.
        with tf.variable_scope(LOSS_SCALE_SCOPE):
            optimizer = tf.train.experimental.MixedPrecisionLossScaleOptimizer(optimizer,
                                                                               "dynamic")
    return optimizer, learning_rate
