"""Restoring a model's variables from a checkpoint, checked first: every variable by name and
shape (a checkpoint of another model is a one-line error, never a half-restored model), or their
moving averages (train.py --moving_average_decay) under slim's names. Used by resuming, the warm
start, scoring (evaluate.py, validation) and tagging (predict.py, export.py, the web page).
"""
import tensorflow.compat.v1 as tf

import cli
from nets import train_dir

# The name of a variable's moving average in a checkpoint (tf.train.ExponentialMovingAverage's).
AVERAGE_SUFFIX = "/ExponentialMovingAverage"


def restore_map(checkpoint, variables, averaged=False):
    """Which of `variables` `checkpoint` can restore, checked by name and shape; with
    `averaged`, from their moving averages (`<name>/ExponentialMovingAverage`).

    Returns (restore {name in the checkpoint: variable}, missing [names], mismatched
    ["name [ckpt] vs [graph]"]); each caller decides what may be missing. A checkpoint that
    cannot be read is a TrainDirError."""
    shapes = variable_shapes(checkpoint)
    restore, missing, mismatched = {}, [], []
    for variable in variables:
        name = variable.op.name + (AVERAGE_SUFFIX if averaged else "")
        if name not in shapes:
            missing.append(name)
        elif list(shapes[name]) != variable.shape.as_list():
            mismatched.append(f"{name} {list(shapes[name])} in the checkpoint vs "
                              f"{variable.shape.as_list()} in the model")
        else:
            restore[name] = variable
    return restore, missing, mismatched


def restore_model(session, checkpoint, config, saver=None, averaged=False):
    """Restores the model of `config` in the session's graph from `checkpoint` (with `averaged`,
    from the moving averages of its weights), once it is known to fit (`check_fits`), with
    `saver` (default: a new Saver of every global variable, or of their averages); returns the
    saver, to restore the same graph's variables again. A checkpoint that fails to restore is a
    TrainDirError in one line."""
    variables = session.graph.get_collection(tf.GraphKeys.GLOBAL_VARIABLES)
    restore = check_fits(checkpoint, config, variables, averaged)
    try:
        with session.graph.as_default():  # outside its graph, Saver.restore takes an eager path
            saver = saver or tf.train.Saver(restore if averaged else None)
            saver.restore(session, train_dir.tf_path(checkpoint))
    except (tf.errors.OpError, ValueError) as error:
        raise train_dir.TrainDirError(
            f"cannot restore {checkpoint}: {cli.first_line(error)}") from None
    return saver


def has_averages(checkpoint):
    """Whether `checkpoint` holds moving averages of its weights (--moving_average_decay)."""
    return any(name.endswith(AVERAGE_SUFFIX) for name in variable_shapes(checkpoint))


def variable_shapes(checkpoint):
    """{variable name: shape} of `checkpoint`; TrainDirError when it cannot be read."""
    try:
        return tf.train.load_checkpoint(train_dir.tf_path(checkpoint)).get_variable_to_shape_map()
    except (tf.errors.OpError, ValueError) as error:
        raise train_dir.TrainDirError(
            f"cannot read checkpoint {checkpoint}: {cli.first_line(error)}") from None


def check_fits(checkpoint, config, variables, averaged=False):
    """The restore map of `variables` (the scoring graph's) when `checkpoint` holds every one
    of them (with `averaged`, their averages) with its shape; else TrainDirError: a checkpoint
    of another model is a one-line error before any restore, not a half-restored model."""
    restore, missing, mismatched = restore_map(checkpoint, variables, averaged)
    problems = mismatched + [f"{name} is missing" for name in missing]
    if averaged and missing and not has_averages(checkpoint):
        raise train_dir.TrainDirError(
            f"{checkpoint} holds no moving averages of its weights (trained with "
            "--moving_average_decay=0, or before train.py kept them): score its raw weights "
            "(--weights=raw)")
    if problems:
        raise train_dir.TrainDirError(
            f"{checkpoint} does not fit the model of its train_config.json "
            f"({config['backbone']}, depth_multiplier {config['depth_multiplier']}, "
            f"{config['num_tags']} tags): {problems[0]} ({len(problems)} variables differ)")
    return restore
