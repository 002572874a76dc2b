"""The learning-rate schedule and the optimizer of a training run.

- `schedule_length`: steps per epoch and the run's total steps, from the settings.
- `learning_rate_schedule`: linear warm-up, then exponential (slim's), cosine or fixed.
- stages: a run's schedule is a list of stages kept in train_config.json (`schedule`). A resumed
  run continues the stage it was in, from that stage's own record, never from flags recomputed;
  `next_stages` refuses flags that would reshape it (naming the flag) unless a new stage is
  asked for (--new_stage), and extending a finished run (a larger --max_steps / --num_epochs) is
  a new stage: a warm-up from the rate the last one reached, then its own decay. Without it, a
  doubled cosine run jumped from 1 % to ~54 % of its peak rate in one step.
- `make_optimizer`: slim train_image_classifier's optimizers with its defaults.
- `build_optimizer`: both on the global step, with dynamic loss scaling under mixed precision.
- `average_weights`: the moving average of the model's weights, updated after each step (slim's
  --moving_average_decay), kept in the checkpoints beside them; `moving_average_decay` picks a
  decay for the run's length.
"""
import math

import cli

import tensorflow.compat.v1 as tf

from nets import restoring

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
                           end_fraction=0.01, start_step=0, start_rate=0.0):
    """From `start_step`: a linear warm-up from `start_rate` over `warmup_steps`, then `decay`:
    "exponential" (slim's, staircase x decay_factor every decay_steps), "cosine" (to
    end_fraction x base_rate at total_steps) or "fixed"."""
    end_rate = end_fraction * base_rate
    step = tf.cast(global_step, tf.float32) - start_step
    total_steps -= start_step
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
        rate = tf.where(step < warmup_steps,
                        start_rate + (base_rate - start_rate) * (step + 1.0) / warmup_steps, rate)
    return rate


class ScheduleError(cli.UserError):
    """Flags that would reshape the learning-rate curve of a run under way."""


# A stage's fields set by flags, and the flags that set them (as a refusal names them).
STAGE_FLAGS = {"learning_rate": "--learning_rate", "warmup_steps": "--warmup_steps",
               "decay": "--learning_rate_decay",
               "decay_steps": "--num_epochs_per_decay (or --batch_size)",
               "end_step": "--max_steps / --num_epochs (or --batch_size)"}
NEW_STAGE_WARMUP = 0.05  # of a new stage's steps, when --warmup_steps is 0: never a jump


def stage(settings, start_step, end_step, steps_per_epoch, start_rate=0.0):
    """One stage of the schedule, steps start_step -> end_step, from the settings' flags."""
    warmup = settings["warmup_steps"]
    if start_step > 0 and warmup == 0:
        warmup = max(1, round(NEW_STAGE_WARMUP * (end_step - start_step)))
    return {"start_step": start_step, "end_step": end_step, "start_rate": start_rate,
            "learning_rate": settings["learning_rate"], "warmup_steps": warmup,
            "decay": settings["learning_rate_decay"],
            "decay_steps": max(1, int(settings["num_epochs_per_decay"] * steps_per_epoch))}


def stage_rate(global_step, stage_):
    return learning_rate_schedule(
        global_step, stage_["learning_rate"], stage_["end_step"], stage_["warmup_steps"],
        stage_["decay"], stage_["decay_steps"], start_step=stage_["start_step"],
        start_rate=stage_["start_rate"])


def rate_at(stage_, step):
    """The learning rate of `stage_` at `step`, computed by the graph's own schedule."""
    with tf.Graph().as_default(), tf.Session() as session:
        return float(session.run(stage_rate(tf.constant(step, tf.int64), stage_)))


def next_stages(stages, settings, start_step, total_steps, steps_per_epoch, new_stage=False):
    """(the schedule's stages for a run starting at start_step, a line announcing a new stage or
    None). `stages`: the train_dir's recorded ones ([] for a new run). Stages from start_step on
    trained nothing the checkpoint holds (a run stopped at its first step): they are dropped."""
    stages = [recorded for recorded in stages if recorded["start_step"] < start_step]
    if not stages:
        return [stage(settings, 0, total_steps, steps_per_epoch)], None
    last = stages[-1]
    wanted = stage(settings, last["start_step"], total_steps, steps_per_epoch,
                   last["start_rate"])
    if wanted == last:
        return stages, None
    if start_step >= last["end_step"] or new_stage:
        new = stage(settings, start_step, total_steps, steps_per_epoch,
                    rate_at(last, start_step))
        return stages + [new], (
            f"learning-rate stage {len(stages) + 1}: steps {start_step}->{total_steps}, warm-up "
            f"from {new['start_rate']:.3g} (the rate reached) to {new['learning_rate']:.3g} "
            f"over {new['warmup_steps']} steps, then {new['decay']}")
    field = next(name for name in STAGE_FLAGS if wanted[name] != last[name])
    raise ScheduleError(
        f"{STAGE_FLAGS[field]} would change this run's learning-rate schedule at step "
        f"{start_step} ({field} {last[field]} -> {wanted[field]}): give the run's own values to "
        "resume it, or add --new_stage to start a new stage here (a warm-up from the current "
        "rate, then its own decay)")


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


def build_optimizer(settings, stage_, mixed_precision):
    """(optimizer, learning rate) of a run's settings: the schedule of its stage `stage_` on the
    global step, and the optimizer (with dynamic loss scaling under mixed precision). Built
    once, outside the replicas: one loss scale and one set of slot variables for all of them."""
    learning_rate = stage_rate(tf.train.get_or_create_global_step(), stage_)
    optimizer = make_optimizer(settings["optimizer"], learning_rate,
                               momentum=settings["momentum"], epsilon=settings["rmsprop_epsilon"])
    if mixed_precision:
        # Scales the loss up before the float16 backward pass (and the gradients back down);
        # a step with overflowing gradients is skipped and the scale lowered.
        with tf.variable_scope(LOSS_SCALE_SCOPE):
            optimizer = tf.train.experimental.MixedPrecisionLossScaleOptimizer(optimizer,
                                                                               "dynamic")
    return optimizer, learning_rate


# The average spans the last ~5 % of the run (1 / (1 - decay) steps): the low tail of the
# learning rate, where the weights wander about a minimum rather than travel to it; a longer
# window reaches back to weights of a higher rate. An estimate from common practice (DeiT's
# 0.99996 over 375k steps spans ~7 %, timm's 0.9998 ~1.3 %), not measured on HARRISON.
AVERAGE_WINDOW = 0.05
AVERAGE_DECAY_RANGE = (0.9, 0.9999)


def moving_average_decay(decay, total_steps):
    """The decay of the weights' moving average: `decay` when given (0: none), else one whose
    window is AVERAGE_WINDOW of the run's `total_steps`, within AVERAGE_DECAY_RANGE."""
    if decay is not None:
        return float(decay)
    low, high = AVERAGE_DECAY_RANGE
    return float(min(high, max(low, 1.0 - 1.0 / max(1.0, AVERAGE_WINDOW * total_steps))))


def average_weights(after, decay, global_step):
    """(op, {variable: its average}), or (`after`, {}) when `decay` is 0: after the op `after`
    (the step), every model variable
    (slim's MODEL_VARIABLES: weights, biases, batch-norm statistics) moves its average towards
    it. TF's ExponentialMovingAverage with num_updates, op for op: the decay is min(decay,
    (1 + step) / (10 + step)), so the first steps do not keep the starting weights for long, and
    each average moves by (average - variable) * (1 - decay). Built in the cross-replica context
    under tf.distribute: once per step, on every replica's copy.

    The averages are made here rather than by ExponentialMovingAverage.apply, which builds a
    tf.cond per variable to start each average at its variable's value: 1-1.5 s of the tests'
    model's 6.8 s training graph build (best of several builds each way), for a value build_run
    overwrites anyway. These start at zero: the run's start sets them to the weights
    it restores or initializes (nets/training.py), or restores them from its checkpoint."""
    if not decay:
        return after, {}
    variables = tf.model_variables()
    strategy = tf.distribute.get_strategy()
    averages = {}
    for variable in variables:
        with strategy.extended.colocate_vars_with(variable):
            averages[variable] = tf.get_variable(
                variable.op.name + restoring.AVERAGE_SUFFIX, variable.shape,
                variable.dtype.base_dtype, initializer=tf.zeros_initializer(), trainable=False)
    with tf.control_dependencies([after]), tf.name_scope("ExponentialMovingAverage"):
        step = tf.cast(global_step, tf.float32, name="num_updates")
        decay = tf.minimum(tf.convert_to_tensor(decay, tf.float32, name="decay"),
                           (1.0 + step) / (10.0 + step))
        rate = 1.0 - decay
        op = tf.group([strategy.extended.update(average, _move_average, args=(variable, rate))
                       for variable, average in averages.items()])
    return op, averages


def _move_average(average, variable, rate):
    return average.assign_sub((average - variable) * rate)


def reset_averages_op(averages):
    """An op setting each average to its variable: the weights a run starts from (restored
    after the averages were initialized)."""
    return tf.group([average.assign(variable) for variable, average in averages.items()])
