"""The training step graph, by one code path for every distribution mode.

On each replica: the batched augmentation (data/preprocessing.distort_batch), the model and its
loss (nets/model.py), the gradients of the trained variables, clipped, applied by the optimizer
(nets/optimization.py), the batch-norm updates with them. One device is tf.distribute's default
strategy (one replica, nothing mirrored); MirroredStrategy and MultiWorkerMirroredStrategy run the
same function once per replica on its share of the global batch, and the v1 optimizer sums the
replicas' gradients. The loss and summaries reported are the replicas' mean. After the step, the moving average of the weights moves (once, across the
replicas: nets/optimization.average_weights).
"""
import functools
import warnings

import tensorflow.compat.v1 as tf

import cli
from data import preprocessing
from nets import model, optimization


def variables_to_train(trainable_scopes=None):
    """Trainable variables under any of `trainable_scopes` (comma-separated), or all of them.
    (The model builds the layers outside them in inference mode: nets/model.build_logits.)"""
    variables = tf.trainable_variables()
    if not model.split_scopes(trainable_scopes):
        return variables
    chosen = [v for v in variables if model.in_scopes(v.op.name, trainable_scopes)]
    if not chosen:
        raise cli.UserError(f"--trainable_scopes={trainable_scopes} matches no variable "
                            f"(names look like {variables[0].op.name})")
    return chosen


def build_steps(settings, dataset, num_tags, stage, mixed_precision, strategy=None):
    """The training step of a run's `settings` on `dataset`'s batches (pipeline.train_dataset's
    dicts of images, draws, labels), under `strategy` (None: the default, one device), at the
    learning rate of `stage` (nets/optimization.stage).
    Returns dict: train_op, loss, global_step (after the step), learning_rate, summaries, averages
    ({model variable: its moving average}, or {}), initializers (ops to run once, after init)."""
    batches, initializers = _batches(strategy, dataset)
    strategy = strategy or tf.distribute.get_strategy()  # the default: one device, one replica
    network = functools.partial(
        model.build_logits, num_tags=num_tags, backbone=settings["backbone"],
        depth_multiplier=settings["depth_multiplier"], is_training=True,
        weight_decay=settings["weight_decay"], batch_norm_decay=settings["batch_norm_decay"],
        dropout_keep_prob=settings["dropout_keep_prob"],
        aux_logits=model.uses_aux_logits(settings["backbone"], settings["image_size"], True,
                                         settings["aux_loss_weight"]),
        trainable_scopes=settings["trainable_scopes"])
    built = {}

    def optimizer(_):  # run once, across the replicas (tf.distribute's merge_call)
        built["optimizer"], built["learning_rate"] = optimization.build_optimizer(
            settings, stage, mixed_precision)
        return built["optimizer"]

    def replica_step(batch):
        for tensor in batch.values():  # static shapes, the replica's share (XLA likes them)
            tensor.set_shape([settings["batch_size"] // strategy.num_replicas_in_sync]
                             + tensor.shape[1:].as_list())
        images = preprocessing.distort_batch(batch["images"], batch["draws"],
                                             settings["hue_jitter"])
        # The graph's random draws (initial weights, dropout) take their seeds from the order
        # the ops are made in: the step, the model, then the optimizer, in every mode.
        tf.train.get_or_create_global_step()
        objective, scalars, updates = _replica_loss(network, images, batch["labels"],
                                                    settings["loss"], settings["aux_loss_weight"])
        step = _apply_gradients(tf.distribute.get_replica_context().merge_call(optimizer),
                                objective, updates, settings["trainable_scopes"],
                                settings["clip_gradient_norm"])
        return dict(step, scalars=dict(scalars, gradient_norm=step.pop("gradient_norm")))

    outputs = strategy.run(replica_step, args=(batches,))
    scalars = {name: strategy.reduce(tf.distribute.ReduceOp.MEAN, value, axis=None)
               for name, value in outputs["scalars"].items()}
    scalars["learning_rate"] = built["learning_rate"]
    train_op, averages = optimization.average_weights(
        tf.group(strategy.experimental_local_results(outputs["train_op"])),
        settings["moving_average_decay"], tf.train.get_global_step())
    return {"train_op": train_op, "averages": averages,
            "loss": scalars["loss/total"], "learning_rate": built["learning_rate"],
            "global_step": strategy.experimental_local_results(outputs["global_step"])[0],
            "summaries": _summaries(scalars), "initializers": initializers}


def _batches(strategy, dataset):
    """(the next batch, its iterator's initializers): each replica's share of the global batch
    under a tf.distribute strategy, the batch itself without one (one device)."""
    if strategy is None:
        return tf.data.make_one_shot_iterator(dataset).get_next(), []
    with warnings.catch_warnings():  # TF's note that it reads the dataset's options in a graph
        warnings.filterwarnings("ignore", message="To make it possible to preserve tf.data")
        iterator = strategy.make_dataset_iterator(dataset)  # splits each global batch
    return iterator.get_next(), [iterator.initializer]


def _replica():
    """(replicas in sync, whether this is the first) of the tf.distribute replica context."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return 1, True
    return context.num_replicas_in_sync, tf.get_static_value(
        context.replica_id_in_sync_group) == 0


def _replica_loss(network, images, labels, loss, aux_loss_weight):
    """(objective, scalars for the summaries, this replica's batch-norm updates) of
    `network(images)` -> (logits, end_points), built here on this replica's images."""
    updates_before = len(tf.get_collection(tf.GraphKeys.UPDATE_OPS))
    logits, end_points = network(images)
    total, parts = model.total_loss(logits, end_points, labels, loss, aux_loss_weight)
    objective, (replicas, first) = total, _replica()
    if replicas > 1:
        # The optimizer sums the replicas' gradients: each replica's share of the batch's mean
        # loss is its own mean over replicas. The weight decay's losses exist once, on the
        # first replica's copies of the variables (the others reuse the variables, not their
        # regularizers), and count there in full: the sum is the single-device objective.
        objective = ((parts["tags"] + aux_loss_weight * parts["aux"]) / replicas
                     + (parts["reg"] if first else 0.0))
    # The replicas are built one after the other: this one's updates are the ones it added.
    updates = tf.get_collection(tf.GraphKeys.UPDATE_OPS)[updates_before:]
    return objective, {"loss/total": total, "loss/tags": parts["tags"], "loss/aux": parts["aux"],
                       "loss/regularization": parts["reg"],
                       "precision_at_1/batch": model.precision_at_1(logits, labels)}, updates


def _apply_gradients(optimizer, objective, updates, trainable_scopes, clip_gradient_norm):
    """Gradients of this replica's objective, clipped, applied (summed over the replicas by the
    v1 optimizer under tf.distribute): {"train_op", "global_step" (after the step),
    "gradient_norm"}."""
    global_step = tf.train.get_or_create_global_step()
    replicas, _ = _replica()  # each replica's gradient is its share of the step (its sum)
    gradients = [(g, v) for g, v in optimizer.compute_gradients(
        objective, var_list=variables_to_train(trainable_scopes)) if g is not None]
    norm = tf.linalg.global_norm([g for g, _ in gradients])
    if clip_gradient_norm:
        # A safety net against a rare huge step, not a regulator: ordinary steps stay below it.
        # Each replica clips its share at limit / replicas: their sum stays within the limit.
        clipped, _ = tf.clip_by_global_norm([g for g, _ in gradients],
                                            clip_gradient_norm / replicas, use_norm=norm)
        gradients = list(zip(clipped, [v for _, v in gradients]))
    # Batch-norm moving averages update with every step, as in slim's training.
    with tf.control_dependencies(updates):
        train_op = optimizer.apply_gradients(gradients, global_step)
    with tf.control_dependencies([train_op]):  # the step count after this step's update
        step_after = tf.identity(global_step.read_value())
    # Reported as the replicas' mean of share x replicas: the sum of the shares' norms, a bound
    # of the step's (the same on one device).
    return {"train_op": train_op, "global_step": step_after, "gradient_norm": norm * replicas}


def _summaries(scalars):
    for name, value in scalars.items():
        tf.summary.scalar(name, value)
    return tf.summary.merge_all()
