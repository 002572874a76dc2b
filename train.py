"""Fine-tunes a slim InceptionV3 with a multi-label (sigmoid) head on preprocess.py's records.

    python3 train.py --records_dir=work/records --train_dir=work/train --checkpoint_path=imagenet
    python3 train.py --preset=cpu            # the built-in sample on a laptop CPU, a few minutes

Re-running the same command resumes from the latest checkpoint in --train_dir. The train_dir
gets checkpoints (model.ckpt-<step>), vocab.txt, train_config.json and TensorBoard summaries,
which is all evaluate.py and predict.py need.
"""
import json
import math
import os
import sys
import time

import numpy as np
from absl import app, flags, logging
from tqdm import tqdm

from nets import compat

slim = compat.import_slim()
import tensorflow.compat.v1 as tf  # noqa: E402
from tensorflow.core.protobuf import rewriter_config_pb2  # noqa: E402

from data import atomic, harrison, input as data_input  # noqa: E402
from nets import tagging, warm_start  # noqa: E402


# ----------------------------------------------------------------------------------- presets
# "gpu" is the full recipe (the flag defaults); "cpu" trains the built-in sample on 2 CPU cores
# in a few minutes. Any flag given explicitly on the command line overrides the preset.
PRESETS = {
    "gpu": {},
    "cpu": {"image_size": 139, "depth_multiplier": 0.25, "batch_size": 32, "max_steps": 300,
            "batch_norm_decay": 0.9, "learning_rate": 0.01, "warmup_steps": 20,
            "learning_rate_decay": "cosine", "save_every_steps": 100, "summary_every_steps": 20,
            "shuffle_buffer": 1024},
}


def _preset_help(name):
    values = {p: s[name] for p, s in PRESETS.items() if name in s}
    return "".join(f" (--preset={p}: {v})" for p, v in values.items())


FLAGS = flags.FLAGS
flags.DEFINE_enum("preset", "gpu", sorted(PRESETS), "Settings bundle: gpu = the full recipe; "
                  "cpu = small images and network for the built-in sample on a CPU. Explicit "
                  "flags override it.")
# data
flags.DEFINE_string("records_dir", "work/records", "preprocess.py output: shards, vocab.txt, "
                    "manifest.json.")
flags.DEFINE_string("train_dir", "work/train", "Checkpoints, summaries, vocab.txt and "
                    "train_config.json. Re-running with the same train_dir resumes.")
flags.DEFINE_integer("image_size", 299, "Input size in pixels." + _preset_help("image_size"))
flags.DEFINE_integer("shuffle_buffer", 2048, "Examples in the shuffle buffer." +
                     _preset_help("shuffle_buffer"))
flags.DEFINE_integer("seed", 0, "Seed for initialization, shuffling and augmentation.")
# model
flags.DEFINE_enum("backbone", "inception_v3", sorted(tagging.BACKBONES), "slim backbone.")
flags.DEFINE_float("depth_multiplier", 1.0, "Channel multiplier of the backbone (1.0 = the "
                   "ImageNet checkpoint's)." + _preset_help("depth_multiplier"))
flags.DEFINE_enum("loss", "sigmoid", tagging.LOSSES, "sigmoid: cross-entropy per tag on the "
                  "multi-hot targets; softmax: cross-entropy against the targets normalised to "
                  "sum to 1 (Mahajan et al. 2018).")
flags.DEFINE_float("aux_loss_weight", tagging.AUX_LOSS_WEIGHT, "Weight of InceptionV3's "
                   "auxiliary-head loss (0 = no auxiliary head).")
flags.DEFINE_float("weight_decay", 4e-5, "L2 weight decay of the slim arg_scope.")
flags.DEFINE_float("batch_norm_decay", 0.9997, "Decay of the batch-norm moving averages." +
                   _preset_help("batch_norm_decay"))
flags.DEFINE_float("dropout_keep_prob", 0.8, "Dropout keep probability before the logits.")
# warm start
flags.DEFINE_string("checkpoint_path", None, "Warm start (only when --train_dir has no "
                    "checkpoint of its own): a slim checkpoint file or prefix, a folder holding "
                    "one, or 'imagenet' (download the TF-Slim ImageNet InceptionV3). Unset: "
                    "train from scratch.")
flags.DEFINE_string("checkpoint_exclude_scopes", warm_start.DEFAULT_EXCLUDE_SCOPES,
                    "Comma-separated variable scopes NOT restored by the warm start.")
flags.DEFINE_string("trainable_scopes", None, "Comma-separated scopes to train (e.g. "
                    "InceptionV3/Logits,InceptionV3/AuxLogits for the head only); default all.")
flags.DEFINE_string("imagenet_url", warm_start.IMAGENET_URL, "Where --checkpoint_path=imagenet "
                    "downloads from (a mirror, or a local server in tests).")
flags.DEFINE_string("pretrained_dir", "work/pretrained", "Cache folder of downloaded checkpoints.")
# optimization
flags.DEFINE_enum("optimizer", "rmsprop", ["rmsprop", "momentum", "adam"], "Optimizer "
                  "(slim's default: rmsprop, decay 0.9, momentum 0.9, epsilon 1.0).")
flags.DEFINE_float("learning_rate", 0.01, "Peak learning rate." + _preset_help("learning_rate"))
flags.DEFINE_integer("warmup_steps", 0, "Linear learning-rate warm-up steps." +
                     _preset_help("warmup_steps"))
flags.DEFINE_enum("learning_rate_decay", "exponential", ["exponential", "cosine", "fixed"],
                  "exponential: x0.94 every --num_epochs_per_decay (slim's); cosine: to 1e-4 at "
                  "the last step." + _preset_help("learning_rate_decay"))
flags.DEFINE_float("num_epochs_per_decay", 2.0, "Epochs between exponential decays.")
flags.DEFINE_float("momentum", 0.9, "Momentum of rmsprop/momentum.")
flags.DEFINE_float("rmsprop_epsilon", 1.0, "RMSProp epsilon (slim's 1.0).")
flags.DEFINE_integer("batch_size", 64, "Images per step." + _preset_help("batch_size"))
flags.DEFINE_float("num_epochs", 10.0, "Training length in epochs over the train split "
                   "(ignored when --max_steps is set).")
flags.DEFINE_integer("max_steps", None, "Training length in steps (overrides --num_epochs)." +
                     _preset_help("max_steps"))
# speed
flags.DEFINE_enum("mixed_precision", "auto", ["auto", "on", "off"], "float16 compute with "
                  "float32 variables and dynamic loss scaling; auto = on when a GPU is visible. "
                  "'on' without a GPU emulates float16 on the CPU (slow; for testing).")
flags.DEFINE_bool("xla", False, "Compile the graph with XLA (auto-clustering).")
# checkpoints and logs
flags.DEFINE_integer("save_every_steps", 1000, "Checkpoint every N steps." +
                     _preset_help("save_every_steps"))
flags.DEFINE_float("save_every_minutes", 10.0, "... and at least every N minutes.")
flags.DEFINE_integer("keep_checkpoints", 5, "Checkpoints kept in --train_dir.")
flags.DEFINE_integer("summary_every_steps", 100, "TensorBoard summaries every N steps." +
                     _preset_help("summary_every_steps"))

SETTINGS = ["preset", "records_dir", "image_size", "shuffle_buffer", "seed", "backbone",
            "depth_multiplier", "loss", "aux_loss_weight", "weight_decay", "batch_norm_decay",
            "dropout_keep_prob", "checkpoint_path", "checkpoint_exclude_scopes",
            "trainable_scopes", "optimizer", "learning_rate", "warmup_steps",
            "learning_rate_decay", "num_epochs_per_decay", "momentum", "rmsprop_epsilon",
            "batch_size", "num_epochs", "max_steps", "mixed_precision", "xla",
            "save_every_steps", "save_every_minutes", "keep_checkpoints", "summary_every_steps"]


LOSS_SCALE_SCOPE = "mixed_precision"


class Stop(Exception):
    """A clear one-line reason to stop (exit code 2, no traceback)."""


def resolve_settings():
    """The run's settings: the preset's values, overridden by the flags given explicitly."""
    settings = {name: FLAGS[name].value for name in SETTINGS}
    for name, value in PRESETS[FLAGS.preset].items():
        if not FLAGS[name].present:
            settings[name] = value
    if FLAGS["num_epochs"].present and not FLAGS["max_steps"].present:
        settings["max_steps"] = None  # an explicit --num_epochs beats the preset's step count
    return settings


def count_train_images(records_dir):
    manifest = harrison.load_manifest(records_dir)
    try:
        return int(manifest["splits"]["train"]["images"])
    except (KeyError, TypeError, ValueError):
        raise Stop(f"{records_dir}/manifest.json has no splits.train.images count") from None


def prepare_train_dir(train_dir, config, vocab):
    """Checks that train_dir holds nothing of another model, then writes vocab.txt and
    train_config.json (atomically) so evaluation needs only the train_dir."""
    tagging.check_train_dir(train_dir, config, vocab)
    os.makedirs(train_dir, exist_ok=True)
    harrison.write_vocab(os.path.join(train_dir, tagging.VOCAB_NAME), vocab)
    atomic.write_text(os.path.join(train_dir, tagging.CONFIG_NAME),
                               json.dumps(config, indent=2, sort_keys=True) + "\n")


def checkpoint_step(checkpoint):
    return int(tf.train.load_checkpoint(checkpoint).get_tensor("global_step"))


def build_resume_saver(checkpoint):
    """A Saver restoring every variable of the graph from `checkpoint`. Only the loss-scale
    state may be absent (a run started without mixed precision, e.g. on a CPU); anything else
    missing or reshaped means the train_dir holds another model: a Stop."""
    shapes = tf.train.load_checkpoint(checkpoint).get_variable_to_shape_map()
    restore, problems = {}, []
    for variable in tf.global_variables():
        name = variable.op.name
        if name not in shapes:
            if not name.startswith(LOSS_SCALE_SCOPE + "/"):
                problems.append(f"{name} is missing")
        elif list(shapes[name]) != variable.shape.as_list():
            problems.append(f"{name} has shape {list(shapes[name])}, "
                            f"not {variable.shape.as_list()}")
        else:
            restore[name] = variable
    if problems:
        raise Stop(f"cannot resume from {checkpoint}: {problems[0]} ({len(problems)} variables "
                   "differ; was it written with other settings, e.g. --trainable_scopes? use a "
                   "new --train_dir)")
    return tf.train.Saver(var_list=restore)


def session_config(mixed_precision, gpu, xla):
    config = tf.ConfigProto()
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


def build_training(settings, images, labels, num_tags, total_steps, steps_per_epoch,
                   mixed_precision):
    """The training graph on (images, labels): model, loss, learning rate, optimizer, train op.
    Returns a dict of the tensors the loop runs. Shared with bench/bench_train.py."""
    global_step = tf.train.get_or_create_global_step()
    logits, end_points = tagging.build_logits(
        images, num_tags, settings["backbone"], settings["depth_multiplier"], is_training=True,
        weight_decay=settings["weight_decay"], batch_norm_decay=settings["batch_norm_decay"],
        dropout_keep_prob=settings["dropout_keep_prob"],
        aux_logits=tagging.uses_aux_logits(settings["backbone"], settings["image_size"], True,
                                           settings["aux_loss_weight"]))
    loss, parts = tagging.total_loss(logits, end_points, labels, settings["loss"],
                                     settings["aux_loss_weight"])
    learning_rate = tagging.learning_rate_schedule(
        global_step, settings["learning_rate"], total_steps, settings["warmup_steps"],
        settings["learning_rate_decay"],
        decay_steps=int(settings["num_epochs_per_decay"] * steps_per_epoch))
    optimizer = tagging.make_optimizer(settings["optimizer"], learning_rate,
                                       momentum=settings["momentum"],
                                       epsilon=settings["rmsprop_epsilon"])
    if mixed_precision:
        # Scales the loss up before the float16 backward pass (and the gradients back down);
        # a step with overflowing gradients is skipped and the scale lowered.
        # Its state lives under LOSS_SCALE_SCOPE, so runs can resume across GPU and CPU.
        with tf.variable_scope(LOSS_SCALE_SCOPE):
            optimizer = tf.train.experimental.MixedPrecisionLossScaleOptimizer(optimizer,
                                                                               "dynamic")
    # Batch-norm moving averages update with every step, as in slim's training.
    trainable = tagging.variables_to_train(settings["trainable_scopes"])
    with tf.control_dependencies(tf.get_collection(tf.GraphKeys.UPDATE_OPS)):
        train_op = optimizer.minimize(loss, global_step, var_list=trainable)
    with tf.control_dependencies([train_op]):  # the step count after this step's update
        step_after = tf.identity(global_step.read_value())
    precision = tagging.precision_at_1(logits, labels)
    for name, value in [("loss/total", loss), ("loss/tags", parts["tags"]),
                        ("loss/aux", parts["aux"]), ("loss/regularization", parts["reg"]),
                        ("learning_rate", learning_rate), ("precision_at_1/batch", precision)]:
        tf.summary.scalar(name, value)
    return {"train_op": train_op, "loss": loss, "global_step": step_after,
            "learning_rate": learning_rate, "summaries": tf.summary.merge_all()}


def main(argv):
    del argv
    settings = resolve_settings()
    train_dir = FLAGS.train_dir
    tf.disable_eager_execution()

    # ------------------------------------------------------------------ data and train_dir
    vocab = harrison.load_records_vocab(settings["records_dir"])
    num_tags = len(vocab)
    train_images = count_train_images(settings["records_dir"])
    steps_per_epoch = max(1, train_images // settings["batch_size"])
    total_steps = settings["max_steps"] or math.ceil(settings["num_epochs"] * steps_per_epoch)
    gpu = bool(tf.config.list_physical_devices("GPU"))
    mixed_precision = {"auto": gpu, "on": True, "off": False}[settings["mixed_precision"]]
    config = dict(settings, num_tags=num_tags, train_images=train_images,
                  total_steps=total_steps, records_dir=os.path.abspath(settings["records_dir"]))
    prepare_train_dir(train_dir, config, vocab)

    latest = tf.train.latest_checkpoint(train_dir)
    start_step = checkpoint_step(latest) if latest else 0
    if start_step >= total_steps:
        print(f"{train_dir} is already trained to step {start_step} (of {total_steps}); "
              "raise --max_steps or --num_epochs to train further")
        return

    # ------------------------------------------------------------------ graph
    graph = tf.Graph()
    with graph.as_default():
        tf.set_random_seed(settings["seed"])
        # A resumed run draws a new data order (seed + step) instead of replaying the first one.
        dataset = data_input.train_dataset(
            settings["records_dir"], settings["image_size"], settings["batch_size"], num_tags,
            seed=settings["seed"] + start_step, shuffle_buffer=settings["shuffle_buffer"])
        images, labels = tf.data.make_one_shot_iterator(dataset).get_next()
        model = build_training(settings, images, labels, num_tags, total_steps, steps_per_epoch,
                               mixed_precision)
        saver = tf.train.Saver(max_to_keep=settings["keep_checkpoints"])
        resume_saver = build_resume_saver(latest) if latest else None
        restore_pretrained = None
        if latest is None and settings["checkpoint_path"]:
            checkpoint = warm_start.resolve(settings["checkpoint_path"], FLAGS.imagenet_url,
                                            FLAGS.pretrained_dir)
            restore_pretrained, report = warm_start.build_restorer(
                checkpoint, settings["checkpoint_exclude_scopes"])
        images_per_second = tf.placeholder(tf.float32, [])
        speed_summary = tf.summary.scalar("images_per_second", images_per_second,
                                          collections=[])
        initialize = tf.global_variables_initializer()
        graph.finalize()

    # ------------------------------------------------------------------ init: resume / warm start
    session = tf.Session(graph=graph, config=session_config(mixed_precision, gpu,
                                                            settings["xla"]))
    session.run(initialize)
    if latest:
        resume_saver.restore(session, latest)
        print(f"resuming from {latest} (step {start_step})")
    elif restore_pretrained:
        restore_pretrained(session)
        print(f"warm start from {report['checkpoint']}: restored {report['restored']} variables, "
              f"left {report['excluded']} under {settings['checkpoint_exclude_scopes']} "
              "initialized")
    else:
        logging.warning("no --checkpoint_path: training from scratch (random initialization); "
                        "--checkpoint_path=imagenet fine-tunes the ImageNet InceptionV3")
    print(f"training {settings['backbone']} x{settings['depth_multiplier']} on {train_images} "
          f"images, {num_tags} tags, {settings['image_size']}px, batch {settings['batch_size']}, "
          f"steps {start_step}->{total_steps}, mixed precision {'on' if mixed_precision else 'off'}"
          f", XLA {'on' if settings['xla'] else 'off'}")

    # ------------------------------------------------------------------ loop
    writer = tf.summary.FileWriter(train_dir, graph=graph if start_step == 0 else None)
    prefix = os.path.join(train_dir, tagging.CHECKPOINT_BASENAME)
    step, saved_step, saved_at = start_step, start_step, time.time()

    def save():
        nonlocal saved_step, saved_at
        saver.save(session, prefix, global_step=step, write_meta_graph=False)
        saved_step, saved_at = step, time.time()
        writer.flush()

    window_start, window_images = None, 0
    with tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True,
              desc="train") as bar:
        try:
            while step < total_steps:
                want_summary = (step + 1) % settings["summary_every_steps"] == 0
                fetches = {"train": model["train_op"], "loss": model["loss"],
                           "step": model["global_step"]}
                if want_summary:
                    fetches["summaries"] = model["summaries"]
                result = session.run(fetches)
                if not np.isfinite(result["loss"]):
                    bar.close()
                    kept = (f"is model.ckpt-{saved_step}" if saved_step > start_step or latest
                            else "was not written yet")
                    raise Stop(f"loss is {result['loss']} at step {step + 1}: stopped without "
                               f"saving; the last good checkpoint in {train_dir} {kept}. Lower "
                               "--learning_rate (or add --warmup_steps) and re-run to resume")
                # The global step does not advance when mixed precision skips an overflowing
                # step (its loss scale is then lowered).
                bar.update(result["step"] - step)
                step = result["step"]
                if window_start is None:  # the first step includes graph optimization: untimed
                    window_start = time.time()
                else:
                    window_images += settings["batch_size"]
                    speed = window_images / max(time.time() - window_start, 1e-9)
                    bar.set_postfix(loss=f"{result['loss']:.4f}", img_s=f"{speed:.1f}")
                if want_summary:
                    writer.add_summary(result["summaries"], step)
                    if window_images:
                        speed_event = session.run(speed_summary, {images_per_second: speed})
                        writer.add_summary(speed_event, step)
                        window_start, window_images = time.time(), 0
                due = (step % settings["save_every_steps"] == 0
                       or time.time() - saved_at >= 60 * settings["save_every_minutes"])
                if due and step != saved_step:
                    save()
        except KeyboardInterrupt:  # Ctrl-C / notebook interrupt: keep the work done so far
            bar.close()
            if step != saved_step:
                save()
            print(f"interrupted at step {step}; saved {prefix}-{step}: re-run the same command "
                  "to resume")
            return
    if saved_step != step:
        save()
    writer.close()
    print(f"saved {prefix}-{step}; last loss {result['loss']:.4f}")


def run(argv):
    try:
        main(argv)
    except (Stop, harrison.FormatError, data_input.InputError, tagging.TrainDirError,
            warm_start.WarmStartError) as error:
        print(f"train.py: error: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    app.run(run)
