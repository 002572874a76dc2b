"""The training side of the model: the run's settings, the training graph and its session.

- Settings: train.py's flags, then a preset fills every flag the user did not give (`PRESETS`).
- The training graph (`build_training`): model, loss, learning-rate schedule, optimizer (with
  dynamic loss scaling under mixed precision), batch-norm updates, summaries.
- `build_steps`: the training step on the input's batches: the batched augmentation, then the
  graph of `build_training`, on one device or one replica per device with tf.distribute
  (`Distribution`: train.py's --distribute and --devices, docs/scaling.md).
- `build_run`: those steps on the records' input, with their savers and the initialization of
  a run (resume from the run's own checkpoint, warm start, or from scratch).
- `session_config`: mixed precision, XLA and the distribution's switches for the session.
- The loop's helpers: `Checkpoints` (when to save, what was saved), `Speedometer` (images/s),
  `StopRequest` (Ctrl-C and SIGTERM finish the step under way, then stop).
"""
import contextlib
import math
import os
import re
import signal
import time
import warnings

import tensorflow.compat.v1 as tf
from absl import logging
from tensorflow.core.protobuf import rewriter_config_pb2

import cli
from data import pipeline, preprocessing
from nets import model, train_dir, warm_start

# The full recipe, for a GPU: train.py's flag defaults (the flags' help says what each means).
RECIPE = {
    "records_dir": "work/records", "image_size": None, "shuffle_buffer": 2048, "seed": 0,
    "min_crop_area": preprocessing.MIN_CROP_AREA, "hue_jitter": preprocessing.HUE_JITTER,
    "backbone": "inception_v3", "depth_multiplier": 1.0, "loss": "sigmoid",
    "aux_loss_weight": model.AUX_LOSS_WEIGHT, "weight_decay": 4e-5, "batch_norm_decay": 0.999,
    "dropout_keep_prob": 0.8, "warm_start": None,
    "checkpoint_exclude_scopes": warm_start.DEFAULT_EXCLUDE_SCOPES, "trainable_scopes": None,
    "optimizer": "rmsprop", "learning_rate": 0.002, "warmup_steps": 500,
    "learning_rate_decay": "cosine", "num_epochs_per_decay": 2.0, "momentum": 0.9,
    "rmsprop_epsilon": 1.0, "clip_gradient_norm": 100.0, "batch_size": 64, "num_epochs": 8.0,
    "max_steps": None, "probe_epochs": 30, "probe_learning_rate": 0.001,
    "mixed_precision": "auto", "xla": False, "save_every_steps": 1000,
    "save_every_minutes": 10.0, "keep_checkpoints": 5, "summary_every_steps": 100,
}
# Changes to the recipe: "gpu" is the recipe itself; "cpu" trains the built-in sample on 2 CPU
# cores in a few minutes. Any flag given explicitly on the command line overrides the preset.
PRESETS = {
    "gpu": {},
    "cpu": {"image_size": 139, "depth_multiplier": 0.25, "batch_size": 32, "max_steps": 300,
            "batch_norm_decay": 0.9, "learning_rate": 0.01, "warmup_steps": 20,
            "learning_rate_decay": "cosine", "save_every_steps": 100, "summary_every_steps": 20,
            "shuffle_buffer": 1024},
}
# The loss-scale state of mixed precision lives under this scope, so a run can resume across a
# GPU (mixed precision on) and a CPU (off).
LOSS_SCALE_SCOPE = "mixed_precision"


def preset_help(name):
    """" (--preset=cpu: 139)" for the flag help of a setting a preset changes."""
    return "".join(f" (--preset={preset}: {values[name]})"
                   for preset, values in PRESETS.items() if name in values)


def recipe(preset="gpu", **overrides):
    """The settings of `preset` with `overrides`, as train.py resolves them without flags."""
    return resolve_settings(dict(RECIPE, preset=preset, **overrides), set(overrides), preset)


def resolve_settings(values, given, preset):
    """The run's settings: `values` (flag name -> value), where the flags not in `given` (the
    names the user typed) take the preset's value. An explicit --num_epochs beats the preset's
    step count; the image size defaults to the backbone's."""
    settings = dict(values)
    for name, value in PRESETS[preset].items():
        if name not in given:
            settings[name] = value
    if "num_epochs" in given and "max_steps" not in given:
        settings["max_steps"] = None
    if settings.get("image_size") is None:
        settings["image_size"] = model.get_backbone(settings["backbone"]).default_image_size
    return settings


def schedule_length(settings, train_images):
    """(steps per epoch, total steps) of a run."""
    steps_per_epoch = max(1, train_images // settings["batch_size"])
    total = settings["max_steps"] or math.ceil(settings["num_epochs"] * steps_per_epoch)
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
    raise ValueError(f"unknown optimizer {name!r}; choose from rmsprop, momentum, adam")


def variables_to_train(trainable_scopes=None):
    """Trainable variables under any of `trainable_scopes` (comma-separated), or all of them."""
    variables = tf.trainable_variables()
    scopes = [s.strip() for s in (trainable_scopes or "").split(",") if s.strip()]
    if not scopes:
        return variables
    chosen = [v for v in variables if any(v.op.name.startswith(s) for s in scopes)]
    if not chosen:
        raise cli.UserError(f"--trainable_scopes={trainable_scopes} matches no variable "
                         f"(names look like {variables[0].op.name})")
    return chosen


def build_training(settings, images, labels, num_tags, total_steps, steps_per_epoch,
                   mixed_precision):
    """The training graph on one device, on model-ready (images, labels): model, loss,
    learning rate, optimizer, train op, summaries. Returns a dict of the tensors the loop runs."""
    tf.train.get_or_create_global_step()  # first, as before: the variables keep their order
    model_loss = _model_loss(settings, images, labels, num_tags)
    optimizer, learning_rate = build_optimizer(settings, total_steps, steps_per_epoch,
                                               mixed_precision)
    run = _train_step(settings, optimizer, model_loss)
    scalars = dict(model_loss["scalars"], learning_rate=learning_rate,
                   gradient_norm=run["gradient_norm"])
    return {"train_op": run["train_op"], "loss": scalars["loss/total"],
            "global_step": run["global_step"], "learning_rate": learning_rate,
            "summaries": _summaries(scalars)}


def build_optimizer(settings, total_steps, steps_per_epoch, mixed_precision):
    """(optimizer, learning rate): the schedule on the global step, and the optimizer (with
    dynamic loss scaling under mixed precision). Under tf.distribute it is built once, outside
    the replicas: one loss scale and one set of slot variables for all of them."""
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


def _model_loss(settings, images, labels, num_tags):
    """The model on this replica's images and its loss: {"loss", "scalars" (for the summaries),
    "updates" (this replica's batch-norm updates)}."""
    updates_before = len(tf.get_collection(tf.GraphKeys.UPDATE_OPS))
    logits, end_points = model.build_logits(
        images, num_tags, settings["backbone"], settings["depth_multiplier"], is_training=True,
        weight_decay=settings["weight_decay"], batch_norm_decay=settings["batch_norm_decay"],
        dropout_keep_prob=settings["dropout_keep_prob"],
        aux_logits=model.uses_aux_logits(settings["backbone"], settings["image_size"], True,
                                         settings["aux_loss_weight"]))
    loss, parts = model.total_loss(logits, end_points, labels, settings["loss"],
                                   settings["aux_loss_weight"])
    objective, (replicas, first) = loss, _replica()
    if replicas > 1:
        # The optimizer sums the replicas' gradients: each replica's share of the batch's mean
        # loss is its own mean over replicas. The weight decay's losses exist once, on the
        # first replica's copies of the variables (the others reuse the variables, not their
        # regularizers), and count there in full: the sum is the single-device objective.
        objective = ((parts["tags"] + settings["aux_loss_weight"] * parts["aux"]) / replicas
                     + (parts["reg"] if first else 0.0))
    return {"loss": objective,
            "updates": tf.get_collection(tf.GraphKeys.UPDATE_OPS)[updates_before:],
            "scalars": {"loss/total": loss, "loss/tags": parts["tags"], "loss/aux": parts["aux"],
                        "loss/regularization": parts["reg"],
                        "precision_at_1/batch": model.precision_at_1(logits, labels)}}


def _replica():
    """(replicas in sync, whether this is the first) of the tf.distribute replica context."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return 1, True
    return context.num_replicas_in_sync, tf.get_static_value(
        context.replica_id_in_sync_group) == 0


def _train_step(settings, optimizer, model_loss):
    """Gradients of this replica's loss, clipped, applied (summed over the replicas by the v1
    optimizer under tf.distribute): {"train_op", "global_step" (after the step),
    "gradient_norm" (of this replica's gradient)}."""
    global_step = tf.train.get_or_create_global_step()
    replicas, _ = _replica()  # each replica's gradient is its share of the step (its sum)
    gradients = [(g, v) for g, v in optimizer.compute_gradients(
        model_loss["loss"], var_list=variables_to_train(settings["trainable_scopes"]))
        if g is not None]
    norm = tf.linalg.global_norm([g for g, _ in gradients])
    if settings["clip_gradient_norm"]:
        # A safety net against a rare huge step, not a regulator: ordinary steps stay below it.
        # Each replica clips its share at limit / replicas: their sum stays within the limit.
        clipped, _ = tf.clip_by_global_norm([g for g, _ in gradients],
                                            settings["clip_gradient_norm"] / replicas,
                                            use_norm=norm)
        gradients = list(zip(clipped, [v for _, v in gradients]))
    # Batch-norm moving averages update with every step, as in slim's training.
    with tf.control_dependencies(model_loss["updates"]):
        train_op = optimizer.apply_gradients(gradients, global_step)
    with tf.control_dependencies([train_op]):  # the step count after this step's update
        step_after = tf.identity(global_step.read_value())
    # Reported as the replicas' mean of share x replicas: the sum of the shares' norms, a bound
    # of the step's (the same on one device).
    return {"train_op": train_op, "global_step": step_after,
            "gradient_norm": norm * replicas if replicas > 1 else norm}


def _summaries(scalars):
    for name, value in scalars.items():
        tf.summary.scalar(name, value)
    return tf.summary.merge_all()


def build_steps(settings, dataset, num_tags, total_steps, steps_per_epoch, mixed_precision,
                strategy=None):
    """The training step on `dataset`'s batches (pipeline.train_dataset's dicts): the batched
    augmentation (preprocessing.distort_batch) then the model, on one device, or with
    `strategy` (tf.distribute) one replica per device, each on its share of the global batch,
    the gradients summed by the optimizer; the loss and summaries are the replicas' mean.
    Returns the dict of `build_training` plus "initializers" (ops to run once)."""
    def augment(batch):
        return preprocessing.distort_batch(batch["images"], batch["draws"],
                                           settings["hue_jitter"])

    if strategy is None:
        batch = tf.data.make_one_shot_iterator(dataset).get_next()
        return dict(build_training(settings, augment(batch), batch["labels"], num_tags,
                                   total_steps, steps_per_epoch, mixed_precision),
                    initializers=[])
    replicas = strategy.num_replicas_in_sync
    optimizer, learning_rate = build_optimizer(settings, total_steps, steps_per_epoch,
                                               mixed_precision)

    def replica_step(batch):
        for tensor in batch.values():  # static shapes, as on one device (XLA likes them)
            tensor.set_shape([settings["batch_size"] // replicas] + tensor.shape[1:].as_list())
        model_loss = _model_loss(settings, augment(batch), batch["labels"], num_tags)
        step = _train_step(settings, optimizer, model_loss)
        return dict(step, scalars=model_loss["scalars"])

    with warnings.catch_warnings():  # TF's note that it reads the dataset's options in a graph
        warnings.filterwarnings("ignore", message="To make it possible to preserve tf.data")
        iterator = strategy.make_dataset_iterator(dataset)  # splits each global batch
    outputs = strategy.run(replica_step, args=(iterator.get_next(),))
    per_replica = dict(outputs["scalars"], gradient_norm=outputs["gradient_norm"])
    scalars = {name: strategy.reduce(tf.distribute.ReduceOp.MEAN, value, axis=None)
               for name, value in per_replica.items()}
    scalars["learning_rate"] = learning_rate
    return {"train_op": tf.group(strategy.experimental_local_results(outputs["train_op"])),
            "loss": scalars["loss/total"], "learning_rate": learning_rate,
            "global_step": strategy.experimental_local_results(outputs["global_step"])[0],
            "summaries": _summaries(scalars), "initializers": [iterator.initializer]}


def build_run(settings, num_tags, total_steps, steps_per_epoch, start_step, mixed_precision,
              prior_biases, resume_from=None, warm_start_from=None, head_from=None,
              distribution=None):
    """The whole graph of a training run, finalized. Returns dict: graph, the tensors of
    `build_steps`, saver (keeps --keep_checkpoints, relative paths in the `checkpoint` file)
    and initialize(session) -> a line saying where the weights came from.

    `distribution` (a `Distribution`; None: one device) spreads the step over replicas. The
    checkpoints are the same either way (slim's variable names, written once), so a run
    resumes on any number of replicas.

    A new run (not `resume_from`) takes the backbone from `warm_start_from` (or random), the
    main head from `head_from` (a linear probe's checkpoint) when given, and starts every head
    not restored at zero weights and `prior_biases`."""
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
            run = build_steps(settings, dataset, num_tags, total_steps, steps_per_epoch,
                              mixed_precision, strategy)
            run["saver"] = tf.train.Saver(max_to_keep=settings["keep_checkpoints"],
                                          save_relative_paths=True)
            steps = [tf.global_variables_initializer()] + run.pop("initializers")
            if resume_from:
                saver = resume_saver(resume_from)
                steps.append(lambda session: saver.restore(session,
                                                           train_dir.tf_path(resume_from)))
                messages = [f"resuming from {resume_from} (step {start_step})"]
            else:
                messages = _warm_start_steps(settings, warm_start_from, head_from,
                                             prior_biases, steps)
    graph.finalize()

    def initialize(session):
        for step in steps:  # ops, and the restore functions of the savers
            if callable(step):
                step(session)
            else:
                session.run(step)
        return "; ".join(messages)

    return dict(run, graph=graph, initialize=initialize)


DISTRIBUTE = ("auto", "none", "mirrored", "multi_worker")
DEVICE = re.compile(r"^/?(?:device:)?(cpu|gpu):(\d+)$", re.IGNORECASE)  # --devices


class Distribution:
    """How a run spreads over devices (train.py's --distribute and --devices):
    - "none": one device, TF's placement (the first GPU when there is one);
    - "mirrored": tf.distribute.MirroredStrategy, one replica per device of this machine
      (default: every visible GPU; CPU devices /cpu:N are made by splitting the CPU, to test
      without GPUs);
    - "multi_worker": tf.distribute.MultiWorkerMirroredStrategy over the machines TF_CONFIG
      lists, every local GPU (or the CPU) of each; this process serves its task and only the
      chief writes the train_dir;
    - "auto": mirrored when more than one GPU is visible or --devices is given, else none.
    `strategy` is None for one device; `chief`: whether this process writes the train_dir."""

    def __init__(self, mode, devices=(), gpus=0):
        devices = [_device(name) for name in devices or ()]
        if mode == "auto":
            mode = "mirrored" if devices or gpus > 1 else "none"
        if devices and mode != "mirrored":
            raise cli.UserError(f"--devices is for --distribute=mirrored (not {mode})")
        self.mode, self.chief, self.target, self.cpu_devices = mode, True, "", 1
        self.strategy = None
        if mode == "mirrored":
            devices = devices or [f"/gpu:{i}" for i in range(gpus)] or ["/cpu:0"]
            missing = [d for d in devices if d.startswith("/gpu") and int(d[5:]) >= gpus]
            if missing:
                raise cli.UserError(f"--devices: {', '.join(missing)} not visible ({gpus} GPUs)")
            cpus = [int(d[5:]) for d in devices if d.startswith("/cpu")]
            self.cpu_devices = 1 + max(cpus, default=0)
            self.strategy = tf.distribute.MirroredStrategy(devices)
        elif mode == "multi_worker":
            self._join_cluster()
        self.replicas = self.strategy.num_replicas_in_sync if self.strategy else 1

    def _join_cluster(self):
        if not os.environ.get("TF_CONFIG"):
            raise cli.UserError("--distribute=multi_worker needs TF_CONFIG (the cluster and this "
                                "process's task, see docs/scaling.md)")
        try:
            self.strategy = tf.distribute.experimental.MultiWorkerMirroredStrategy()
        except ValueError as error:
            raise cli.UserError(f"TF_CONFIG: {cli.first_line(error)}") from None
        resolver = self.strategy.cluster_resolver
        # In a v1 graph the strategy starts no server: this process's task serves from here,
        # with the strategy's collective settings, and the session runs through it.
        self._server = tf.distribute.Server(
            resolver.cluster_spec(), job_name=resolver.task_type, task_index=resolver.task_id,
            config=self.session_config(tf.ConfigProto()), start=True)
        self.target = self._server.target
        self.chief = self.strategy.extended.should_checkpoint

    def check_batch(self, batch_size):
        if batch_size % self.replicas:
            raise cli.UserError(f"--batch_size={batch_size} does not split evenly across "
                                f"{self.replicas} replicas: it is the global batch, shared by "
                                "the replicas")

    def session_config(self, config):
        if self.strategy:
            config = self.strategy.update_config_proto(config)
        if self.cpu_devices > 1:  # the v1 session's own devices: the CPU split in several
            config.device_count["CPU"] = self.cpu_devices
        return config

    def describe(self):
        if not self.strategy:
            return "one device"
        return f"{self.mode} over {self.replicas} replicas"


def _device(name):
    match = DEVICE.match(name.strip())
    if not match:
        raise cli.UserError(f"--devices: {name!r} is not a device like /gpu:0 or /cpu:1")
    return f"/{match.group(1).lower()}:{int(match.group(2))}"


def _warm_start_steps(settings, warm_start_from, head_from, prior_biases, steps):
    """Appends to `steps` what starts a new run's weights; returns the lines saying so."""
    restored, messages = set(), []
    if warm_start_from:
        restore, report = warm_start.build_restorer(warm_start_from,
                                                    settings["checkpoint_exclude_scopes"])
        steps.append(restore)
        restored |= report["names"]
        messages.append(f"warm start from {report['checkpoint']}: restored {report['restored']} "
                        f"variables, left {report['excluded']} under "
                        f"{settings['checkpoint_exclude_scopes']} initialized")
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


def resume_saver(checkpoint):
    """A Saver restoring every variable of the training graph from the run's own `checkpoint`.
    Only the loss-scale state may be absent (a run started without mixed precision, e.g. on a
    CPU); anything else missing or reshaped means the train_dir holds another model."""
    restore, missing, mismatched = train_dir.restore_map(checkpoint, tf.global_variables())
    problems = mismatched + [f"{name} is missing" for name in missing
                             if not name.startswith(LOSS_SCALE_SCOPE + "/")]
    if problems:
        raise train_dir.TrainDirError(
            f"cannot resume from {checkpoint}: {problems[0]} ({len(problems)} variables differ; "
            "was it written with other settings, e.g. --trainable_scopes? use a new --train_dir)")
    # A list, not the map: a saver given a map takes a tf.distribute batch-norm statistic
    # (synchronized on read) for a tensor; a list names each variable by its own name, the key.
    return tf.train.Saver(var_list=list(restore.values()))


def session_config(mixed_precision, gpu, xla, distribution=None):
    config = tf.ConfigProto()
    if distribution:
        config = distribution.session_config(config)
    config.gpu_options.allow_growth = True
    if mixed_precision:
        # Grappler's auto mixed precision pass rewrites the graph to float16 compute with float32
        # variables on GPUs; without one, its CPU variant emulates float16 (for testing).
        options = config.graph_options.rewrite_options
        if gpu:
            options.auto_mixed_precision = rewriter_config_pb2.RewriterConfig.ON
        else:
            options.auto_mixed_precision_cpu = rewriter_config_pb2.RewriterConfig.ON
    if xla:
        config.graph_options.optimizer_options.global_jit_level = tf.OptimizerOptions.ON_1
    return config


class Checkpoints:
    """When the loop saves, and what it saved. The saver's kept set starts from the checkpoints
    already in the train_dir, so --keep_checkpoints counts across resumes. Two are kept apart
    from it, never rotated away: the best on the val split (best.json) and model.ckpt-0, the
    linear probe's model when the run had one (its result, to evaluate on the test split)."""

    PROBE_STEP = 0

    def __init__(self, saver, session, directory):
        self.saver, self.session, self.directory = saver, session, directory
        existing = train_dir.list_checkpoints(directory)
        best = train_dir.best(directory)
        self.best = best["step"] if best else None
        saver.recover_last_checkpoints([train_dir.tf_path(prefix) for step, prefix in existing
                                        if step not in (self.best, self.PROBE_STEP)])
        self.last = existing[-1][0] if existing else None
        self.saved_at = time.time()

    def _rotate(self, drop=None, add=None):
        """The saver's rotation without the checkpoint of step `drop`, with the one of `add`,
        in the order they were written (the saver deletes the oldest at its next save)."""
        paths = set(self.saver.last_checkpoints) - {train_dir.tf_path(self.prefix(drop))}
        if add is not None and os.path.isfile(self.prefix(add) + ".index"):
            paths.add(train_dir.tf_path(self.prefix(add)))
        self.saver.set_last_checkpoints_with_time(sorted(
            ((path, os.path.getmtime(path + ".index")) for path in paths), key=lambda p: p[1]))

    def keep_best(self, step):
        """Takes `step` out of the rotation (it is the new best) and gives the previous best
        back to it (unless that is the probe's, kept for good)."""
        previous, self.best = self.best, step
        self._rotate(drop=step, add=previous if previous != self.PROBE_STEP else None)

    def due(self, step, every_steps, every_minutes):
        return step != self.last and (step % every_steps == 0
                                      or time.time() - self.saved_at >= 60 * every_minutes)

    def save(self, step):
        """Saves `step` unless it is saved already; True when it wrote a checkpoint."""
        if step == self.last:
            return False
        try:
            prefix = os.path.join(self.directory, train_dir.CHECKPOINT_BASENAME)
            self.saver.save(self.session, train_dir.tf_path(prefix), global_step=step,
                            write_meta_graph=False)
        except (tf.errors.OpError, OSError) as error:  # a full disk is ResourceExhaustedError
            train_dir.remove_partial_checkpoints(self.directory)
            raise cli.UserError(f"cannot save step {step} in {self.directory}: "
                                f"{cli.first_line(error)}; {self.describe_last()}") from None
        self.last, self.saved_at = step, time.time()
        if step == self.PROBE_STEP:
            self._rotate(drop=step)
        return True

    def prefix(self, step):
        return train_dir.checkpoint_prefix(self.directory, step)

    def describe_last(self):
        if self.last is None:
            return f"no checkpoint was written in {self.directory}"
        return f"the last checkpoint is {self.prefix(self.last)}"


class Speedometer:
    """Training images/s, over the steps since the last summary (the first step, which includes
    graph optimization, is not timed)."""

    def __init__(self, batch_size):
        self.batch_size, self.started, self.images, self.rate = batch_size, None, 0, None

    def tick(self):
        """Counts one step; returns the current rate (None until one is measured)."""
        if self.started is None:
            self.started = time.time()
            return None
        self.images += self.batch_size
        self.rate = self.images / max(time.time() - self.started, 1e-9)
        return self.rate

    def summary(self):
        """The rate as a TensorBoard summary; starts the next window."""
        event = tf.Summary(value=[tf.Summary.Value(tag="images_per_second",
                                                   simple_value=self.rate or 0.0)])
        self.started, self.images = time.time(), 0
        return event


class StopRequest:
    """While entered, the first SIGINT (Ctrl-C, a notebook's interrupt) or SIGTERM (what Colab
    and job schedulers send) only sets `requested`: the loop finishes its step, saves and stops.
    A second one interrupts at once."""

    SIGNALS = {signal.SIGINT: "interrupted (SIGINT)", signal.SIGTERM: "terminated (SIGTERM)"}

    def __init__(self):
        self.requested, self._previous = None, {}

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = self.SIGNALS[signum]

    def __enter__(self):
        for signum in self.SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
