"""A training run's graph, ready to start: the step (nets/train_step.py) on the records'
input, its savers, and how its weights start: resumed from the run's own checkpoint, warm-started
(the backbone from a checkpoint, the main head from the linear probe), or from scratch; every
head not restored starts at the tag priors; the moving average of the weights starts at them.
"""
import contextlib

import tensorflow.compat.v1 as tf
from absl import logging

from data import pipeline
from nets import model, optimization, restoring, train_dir, train_step, warm_start


def build_run(settings, num_tags, stage, start_step, mixed_precision, prior_biases,
              resume_from=None, warm_start_from=None, head_from=None, distribution=None):
    """The whole graph of a training run, finalized. Returns dict: graph, the tensors of
    `train_step.build_steps`, saver (keeps --keep_checkpoints, relative paths in the `checkpoint` file)
    and initialize(session) -> a line saying where the weights came from.

    `distribution` (nets/distribution.py; None: one device) spreads the step over replicas. The
    checkpoints are the same either way (slim's variable names, written once), so a run
    resumes on any number of replicas.

    A new run (not `resume_from`) takes the backbone from `warm_start_from` (a
    warm_start.Source; None: random), the main head from `head_from` (a linear probe's
    checkpoint) when given, and starts every head not restored at zero weights and
    `prior_biases`."""
    graph = tf.Graph()
    with graph.as_default():
        strategy = distribution.strategy if distribution else None
        with strategy.scope() if strategy else contextlib.nullcontext():
            tf.set_random_seed(settings["seed"])
            # A resumed run draws a new data order (seed + step) instead of replaying the first.
            dataset = pipeline.train_dataset(
                settings["records_dir"], settings["image_size"], settings["batch_size"],
                num_tags, seed=settings["seed"] + start_step,
                shuffle_buffer=settings["shuffle_buffer"],
                min_crop_area=settings["min_crop_area"])
            run = train_step.build_steps(settings, dataset, num_tags, stage, mixed_precision,
                                         strategy)
            run["saver"] = tf.train.Saver(max_to_keep=settings["keep_checkpoints"],
                                          save_relative_paths=True)
            steps = [tf.global_variables_initializer()] + run.pop("initializers")
            averages = run.pop("averages")
            if resume_from:
                messages = _resume_steps(resume_from, start_step, averages, steps)
            else:
                messages = _warm_start_steps(settings, warm_start_from, head_from,
                                             prior_biases, steps)
                if averages:  # after the weights are restored: the average starts at them
                    steps.append(optimization.reset_averages_op(averages))
    graph.finalize()

    def initialize(session):
        for step in steps:  # ops, and the restore functions of the savers
            if callable(step):
                step(session)
            else:
                session.run(step)
        return "; ".join(messages)

    return dict(run, graph=graph, initialize=initialize)


def _resume_steps(resume_from, start_step, averages, steps):
    """Appends to `steps` what restores a resumed run's variables; returns the lines saying so.
    A checkpoint of a run without the weights' moving averages starts them at its weights."""
    saver, unaveraged = resume_saver(resume_from, averages)
    steps.append(lambda session: saver.restore(session, train_dir.tf_path(resume_from)))
    messages = [f"resuming from {resume_from} (step {start_step})"]
    if unaveraged:
        steps.append(optimization.reset_averages_op(averages))
        messages.append("the moving average of the weights starts from them")
    return messages


def _warm_start_steps(settings, warm_start_from, head_from, prior_biases, steps):
    """Appends to `steps` what starts a new run's weights; returns the lines saying so."""
    restored, messages = set(), []
    if warm_start_from:
        restore, report = warm_start.build_restorer(
            warm_start_from.checkpoint, settings["checkpoint_exclude_scopes"],
            optional_scopes=model.aux_scope(settings["backbone"]))
        steps.append(restore)
        restored |= report["names"]
        messages.append(f"warm start from {warm_start_from.name}: restored {report['restored']} "
                        f"variables, left {report['excluded']} under "
                        f"{settings['checkpoint_exclude_scopes'] or '(nothing)'} initialized"
                        + (f", and {report['initialized']} of the auxiliary head the checkpoint "
                           "lacks (or has at another image size)" if report["initialized"]
                           else ""))
    else:
        logging.warning("no --warm_start: training from scratch (random initialization); "
                        "--warm_start=imagenet fine-tunes the ImageNet InceptionV3")
        messages.append("initialized at random")
    if head_from:
        main_head = model.get_backbone(settings["backbone"]).heads[0]
        restore, report = warm_start.build_restorer(
            head_from, exclude_scopes="", variables=model.head_variables(
                settings["backbone"])[main_head])
        steps.append(restore)
        restored |= report["names"]
        messages.append(f"head from the linear probe {head_from}")
    skip = {scope for scope in model.get_backbone(settings["backbone"]).heads
            if scope + "/weights" in restored}
    steps.append(model.initialize_heads_op(settings["backbone"], prior_biases, skip,
                                           zero_weights=bool(warm_start_from)))
    return messages


def resume_saver(checkpoint, averages):
    """(a Saver restoring every variable of the training graph from the run's own `checkpoint`,
    whether it lacks the moving `averages` of the weights). Only those and the loss-scale state
    may be absent (a run started without them, or without mixed precision, e.g. on a CPU);
    anything else missing or reshaped means the train_dir holds another model."""
    restore, missing, mismatched = restoring.restore_map(checkpoint, tf.global_variables())
    optional = {average.op.name for average in averages.values()}
    problems = mismatched + [f"{name} is missing" for name in missing
                             if not name.startswith(optimization.LOSS_SCALE_SCOPE + "/")
                             and name not in optional]
    if problems:
        raise train_dir.TrainDirError(
            f"cannot resume from {checkpoint}: {problems[0]} ({len(problems)} variables differ; "
            "was it written with other settings, e.g. --trainable_scopes? use a new --train_dir)")
    # A list, not the map: a saver given a map takes a tf.distribute batch-norm statistic
    # (synchronized on read) for a tensor; a list names each variable by its own name, the key.
    return tf.train.Saver(var_list=list(restore.values())), bool(optional & set(missing))
