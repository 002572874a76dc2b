"""Fine-tunes a slim InceptionV3 with a multi-label (sigmoid) head on preprocess.py's records.

    python3 train.py --records_dir=work/records --train_dir=work/train --warm_start=imagenet
    python3 train.py --preset=cpu            # the built-in sample on a laptop CPU, a few minutes

Re-running the same command resumes from the newest checkpoint in --train_dir. The train_dir
gets checkpoints (model.ckpt-<step>), vocab.txt, train_config.json and TensorBoard summaries,
which is all evaluate.py, predict.py and export.py need (nets/train_dir.py). Ctrl-C or SIGTERM
finishes the current step, saves it and exits; the same command then resumes. With several GPUs
it trains on all of them, and on several machines with --distribute=multi_worker
(tf.distribute, docs/scaling.md).
"""
import contextlib
import os
import sys
import tempfile

import numpy as np
import tensorflow.compat.v1 as tf
from absl import flags
from tqdm import tqdm

import cli
from data import harrison, pipeline
from evaluation import metrics, validation
from nets import linear_probe, model, train_dir, training, warm_start

FLAGS = flags.FLAGS
R, help_ = training.RECIPE, training.preset_help  # the defaults, and what a preset changes
flags.DEFINE_enum("preset", "gpu", sorted(training.PRESETS), "Settings bundle: gpu = the full "
                  "recipe; cpu = small images and network for the built-in sample on a CPU. "
                  "Explicit flags override it.")
# data
flags.DEFINE_string("records_dir", R["records_dir"], "preprocess.py output: shards, vocab.txt, "
                    "manifest.json.")
flags.DEFINE_string("train_dir", "work/train", "Checkpoints, summaries, vocab.txt and "
                    "train_config.json. Re-running with the same train_dir resumes.")
flags.DEFINE_integer("image_size", R["image_size"], "Model input size in pixels; default: the "
                     "backbone's (299 for inception_v3)." + help_("image_size"),
                     lower_bound=75, upper_bound=1024)
flags.DEFINE_integer("shuffle_buffer", R["shuffle_buffer"], "Examples in the shuffle buffer." +
                     help_("shuffle_buffer"), lower_bound=1, upper_bound=100_000)
flags.DEFINE_integer("seed", R["seed"], "Seed for initialization, shuffling and augmentation.")
flags.DEFINE_float("min_crop_area", R["min_crop_area"], "Smallest fraction of the photo a "
                   "training crop keeps (slim's ImageNet recipe: 0.05).")
flags.DEFINE_float("hue_jitter", R["hue_jitter"], "Largest random hue shift of training "
                   "images (0: none, since colours are hashtags; slim's: 0.05).")
# model
flags.DEFINE_enum("backbone", R["backbone"], sorted(model.BACKBONES), "slim backbone.")
flags.DEFINE_float("depth_multiplier", R["depth_multiplier"], "Channel multiplier of the "
                   "backbone (1.0 = the ImageNet checkpoint's)." + help_("depth_multiplier"))
flags.DEFINE_enum("loss", R["loss"], model.LOSSES, "sigmoid: cross-entropy per tag on the "
                  "multi-hot targets; softmax: cross-entropy against the targets normalised to "
                  "sum to 1 (Mahajan et al. 2018).")
flags.DEFINE_float("aux_loss_weight", R["aux_loss_weight"], "Weight of InceptionV3's "
                   "auxiliary-head loss (0 = no auxiliary head).")
flags.DEFINE_float("weight_decay", R["weight_decay"], "L2 weight decay of the slim arg_scope.")
flags.DEFINE_float("batch_norm_decay", R["batch_norm_decay"], "Decay of the batch-norm moving "
                   "averages." + help_("batch_norm_decay"))
flags.DEFINE_float("dropout_keep_prob", R["dropout_keep_prob"], "Dropout keep probability "
                   "before the logits.")
# warm start
flags.DEFINE_string("warm_start", R["warm_start"], "Initial weights (only when --train_dir has "
                    "no checkpoint of its own): a slim checkpoint file or prefix, a folder "
                    "holding one, or 'imagenet' (download the TF-Slim ImageNet InceptionV3). "
                    "Unset: train from scratch.")
flags.DEFINE_string("checkpoint_exclude_scopes", R["checkpoint_exclude_scopes"],
                    "Comma-separated variable scopes NOT restored by the warm start.")
flags.DEFINE_string("trainable_scopes", R["trainable_scopes"], "Comma-separated scopes to train "
                    "(e.g. InceptionV3/Logits,InceptionV3/AuxLogits for the head only); "
                    "default all.")
flags.DEFINE_string("imagenet_url", warm_start.IMAGENET_URL, "Where --warm_start=imagenet "
                    "downloads from (a mirror, or a local server in tests).")
flags.DEFINE_string("pretrained_dir", "work/pretrained", "Cache folder of downloaded "
                    "checkpoints.")
# optimization
flags.DEFINE_enum("optimizer", R["optimizer"], ["rmsprop", "momentum", "adam"], "Optimizer "
                  "(slim's default: rmsprop, decay 0.9, momentum 0.9, epsilon 1.0).")
flags.DEFINE_float("learning_rate", R["learning_rate"], "Peak learning rate." +
                   help_("learning_rate"))
flags.DEFINE_integer("warmup_steps", R["warmup_steps"], "Linear learning-rate warm-up steps." +
                     help_("warmup_steps"), lower_bound=0)
flags.DEFINE_enum("learning_rate_decay", R["learning_rate_decay"],
                  ["exponential", "cosine", "fixed"], "cosine: after the warm-up, down to 1% of "
                  "the peak at the last step; exponential: x0.94 every --num_epochs_per_decay "
                  "(slim's); fixed." +
                  help_("learning_rate_decay"))
flags.DEFINE_float("num_epochs_per_decay", R["num_epochs_per_decay"], "Epochs between "
                   "exponential decays.")
flags.DEFINE_float("momentum", R["momentum"], "Momentum of rmsprop/momentum.")
flags.DEFINE_float("rmsprop_epsilon", R["rmsprop_epsilon"], "RMSProp epsilon (slim's 1.0).")
flags.DEFINE_float("clip_gradient_norm", R["clip_gradient_norm"], "Clip the gradients to this "
                   "global norm: a safety net against a rare huge step, far above ordinary "
                   "ones (TensorBoard: gradient_norm; 0: no clipping).")
flags.DEFINE_integer("batch_size", R["batch_size"], "Images per step." + help_("batch_size"),
                     lower_bound=1, upper_bound=4096)
flags.DEFINE_float("num_epochs", R["num_epochs"], "Training length in epochs over the train "
                   "split (ignored when --max_steps is set).")
flags.DEFINE_integer("max_steps", R["max_steps"], "Training length in steps (overrides "
                     "--num_epochs)." + help_("max_steps"), lower_bound=1)
# speed
flags.DEFINE_enum("mixed_precision", R["mixed_precision"], ["auto", "on", "off"], "float16 "
                  "compute with float32 variables and dynamic loss scaling; auto = on when a GPU "
                  "is visible. 'on' without a GPU emulates float16 on the CPU (slow; for "
                  "testing).")
flags.DEFINE_bool("xla", R["xla"], "Compile the graph with XLA (auto-clustering).")
flags.DEFINE_enum("distribute", "auto", training.DISTRIBUTE, "Several devices with "
                  "tf.distribute (docs/scaling.md): mirrored = one replica per GPU of this "
                  "machine (--devices); multi_worker = every machine TF_CONFIG lists; none = one "
                  "device; auto = mirrored when more than one GPU is visible. --batch_size is "
                  "the global batch, split across the replicas.")
flags.DEFINE_list("devices", None, "--distribute=mirrored's devices, e.g. /gpu:0,/gpu:1 "
                  "(default: every visible GPU); /cpu:0,/cpu:1 splits the CPU (testing "
                  "without GPUs).")
# linear probe (stage 1, with a warm start)
flags.DEFINE_integer("probe_epochs", R["probe_epochs"], "Epochs of the linear probe: the tag "
                     "head trained on the frozen warm-start backbone's cached features before "
                     "fine-tuning everything (0: no probe).", lower_bound=0, upper_bound=10_000)
flags.DEFINE_float("probe_learning_rate", R["probe_learning_rate"], "Adam learning rate of the "
                   "linear probe.")
# checkpoints and logs
flags.DEFINE_integer("save_every_steps", R["save_every_steps"], "Checkpoint every N steps." +
                     help_("save_every_steps"), lower_bound=1)
flags.DEFINE_float("save_every_minutes", R["save_every_minutes"], "... and at least every N "
                   "minutes.")
flags.DEFINE_integer("keep_checkpoints", R["keep_checkpoints"], "Checkpoints kept in "
                     "--train_dir (counted across resumes).", lower_bound=1)
flags.DEFINE_integer("summary_every_steps", R["summary_every_steps"], "TensorBoard summaries "
                     "every N steps." + help_("summary_every_steps"), lower_bound=1)
# (name, low, high, ends included): a value outside is refused at parse time, with NaN.
for name, low, high, ends in [
        ("depth_multiplier", 0, 4, "(]"), ("aux_loss_weight", 0, 10, "[]"),
        ("weight_decay", 0, 1, "[]"), ("batch_norm_decay", 0, 1, "()"),
        ("dropout_keep_prob", 0, 1, "(]"), ("learning_rate", 0, None, "(]"),
        ("num_epochs_per_decay", 0, None, "(]"), ("momentum", 0, 1, "[)"),
        ("rmsprop_epsilon", 0, None, "(]"), ("num_epochs", 0, 10_000, "(]"),
        ("clip_gradient_norm", 0, None, "[]"), ("probe_learning_rate", 0, 1, "(]"),
        ("min_crop_area", 0, 1, "(]"), ("hue_jitter", 0, 0.5, "[]"),
        ("save_every_minutes", 0, None, "(]")]:
    cli.check_range(name, low, high, ends[0] == "[", ends[1] == "]")
flags.register_validator("devices", lambda names: all(
    training.DEVICE.match(name.strip()) for name in names or ()),
    "--devices takes devices like /gpu:0,/gpu:1 or /cpu:0,/cpu:1")
cli.deprecated_alias("checkpoint_path", "warm_start")
# Where this run writes, fetches and runs, not how it trains: not part of train_config.json
# (a run resumes on another number of devices).
NOT_SETTINGS = ("train_dir", "imagenet_url", "pretrained_dir", "distribute", "devices")


def read_settings():
    """This script's flags as the run's settings, the preset filling the ones not given."""
    script_flags = FLAGS.get_flags_for_module(FLAGS.find_module_defining_flag("preset"))
    values = {f.name: f.value for f in script_flags if f.name not in NOT_SETTINGS}
    given = {name for name in values if FLAGS[name].present}
    return training.resolve_settings(values, given, FLAGS.preset)


def main(argv):
    if len(argv) > 1:
        raise cli.UserError(f"unexpected arguments: {' '.join(argv[1:])}")
    settings = read_settings()
    records = settings["records_dir"]
    vocab = harrison.load_records_vocab(records)
    images = {split: harrison.split_images(records, split) for split in ("train", "val")}
    if not images["train"]:
        raise cli.UserError(f"{records}/manifest.json counts no train images")
    train_counts = pipeline.tag_counts(records, vocab)
    prior_biases = model.prior_biases(train_counts, images["train"], settings["loss"])
    tf.disable_eager_execution()
    steps_per_epoch, total_steps = training.schedule_length(settings, images["train"])
    gpus = len(tf.config.list_physical_devices("GPU"))
    mixed_precision = {"auto": gpus > 0, "on": True, "off": False}[settings["mixed_precision"]]
    distribution = training.Distribution(FLAGS.distribute, FLAGS.devices, gpus)
    distribution.check_batch(settings["batch_size"])
    config = dict(settings, num_tags=len(vocab), train_images=images["train"],
                  total_steps=total_steps, records_dir=os.path.abspath(records))
    with claim_train_dir(config, vocab, distribution.chief) as write_dir:
        train_dir.remove_partial_checkpoints(write_dir)
        latest = train_dir.latest_checkpoint(FLAGS.train_dir)
        start_step = train_dir.checkpoint_step(latest) if latest else 0
        if start_step >= total_steps:
            print(f"{FLAGS.train_dir} is already trained to step {start_step} (of "
                  f"{total_steps}); raise --max_steps or --num_epochs to train further")
            return
        if distribution.chief:  # only a run that trains changes the train_dir's config
            train_dir.record_config(FLAGS.train_dir, config, vocab)
        validator = (validation.Validator(config, records, train_counts, FLAGS.train_dir)
                     if images["val"] and distribution.chief else None)
        pretrained, probe_head = None, None
        if latest is None and settings["warm_start"]:
            pretrained = warm_start.checkpoint_for(settings["warm_start"], FLAGS.imagenet_url,
                                                   FLAGS.pretrained_dir)
            if settings["probe_epochs"]:
                probe_head = run_linear_probe(settings, config, pretrained, prior_biases,
                                              images, distribution)
        # From here on, Ctrl-C and SIGTERM let the step under way finish, save and stop.
        with training.StopRequest() as stop:
            run = training.build_run(settings, len(vocab), total_steps, steps_per_epoch,
                                     start_step, mixed_precision, prior_biases,
                                     resume_from=latest, warm_start_from=pretrained,
                                     head_from=probe_head, distribution=distribution)
            session = tf.Session(distribution.target, graph=run["graph"],
                                 config=training.session_config(mixed_precision, gpus > 0,
                                                                settings["xla"], distribution))
            print(run["initialize"](session))
            print(f"training {settings['backbone']} x{settings['depth_multiplier']} on "
                  f"{images['train']} images, {len(vocab)} tags, {settings['image_size']}px, "
                  f"batch {settings['batch_size']}, steps {start_step}->{total_steps}, mixed "
                  f"precision {'on' if mixed_precision else 'off'}, XLA "
                  f"{'on' if settings['xla'] else 'off'}, {distribution.describe()}")
            train_loop(run, session, settings, start_step, total_steps, stop, validator,
                       write_dir, distribution, probe_done=probe_head is not None)
        if validator:
            validator.close()
    if stop.requested:
        sys.exit(130)


@contextlib.contextmanager
def claim_train_dir(config, vocab, chief=True):
    """The folder this process writes: --train_dir, prepared and locked for this run. A
    multi-worker run's other workers only read --train_dir (the chief's, on storage they
    share): they check it and write their copies of the checkpoints, which saving needs from
    every worker, to a temporary folder, removed at the end."""
    if chief:
        with train_dir.exclusive(FLAGS.train_dir):  # a refused second run touches nothing
            train_dir.prepare(FLAGS.train_dir, config, vocab)
            yield FLAGS.train_dir
        return
    train_dir.check_compatible(FLAGS.train_dir, config, vocab)
    with tempfile.TemporaryDirectory(prefix="train-worker-") as folder:
        yield folder


def run_linear_probe(settings, config, pretrained, prior_biases, images, distribution):
    """Stage 1: the tag head fitted on the frozen backbone's cached features (resumable: the
    features are cached in chunks); returns the head's checkpoint. One process's work: a
    multi-worker run starts after it."""
    if distribution.mode == "multi_worker":
        raise cli.UserError("--distribute=multi_worker runs stage 2 (fine-tuning) only: run the "
                            "linear probe on one machine first (the same command with "
                            "--distribute=none --max_steps=1), or add --probe_epochs=0")
    def restore():
        return warm_start.build_restorer(pretrained, settings["checkpoint_exclude_scopes"])[0]

    def score(scores, labels):
        return metrics.evaluate(scores, labels, (1,))[validation.METRIC]

    train = linear_probe.cache_features(FLAGS.train_dir, config, settings["records_dir"],
                                        "train", images["train"], restore)
    val = (linear_probe.cache_features(FLAGS.train_dir, config, settings["records_dir"], "val",
                                       images["val"], restore) if images["val"] else train)
    head, value, epoch = linear_probe.train_head(
        FLAGS.train_dir, config, train, val, prior_biases, settings["probe_epochs"],
        settings["probe_learning_rate"], settings["weight_decay"], score, settings["seed"])
    print(f"linear probe: {validation.METRIC} {100 * value:.2f} on the "
          f"{'val' if images['val'] else 'train'} features at epoch {epoch} of "
          f"{settings['probe_epochs']} -> {head}")
    return head


def train_loop(run, session, settings, start_step, total_steps, stop, validator, write_dir,
               distribution, probe_done=False):
    """Runs steps to total_steps (or until `stop` is requested), saving (and scoring the val
    split) on schedule, and saves the last step, in `write_dir`. With `probe_done`, step 0 (the
    warm-start backbone and the probed head) is saved and scored first: the linear probe's own
    result. The workers of a multi-worker run save together (saving reads every worker's
    batch-norm statistics), so there only --save_every_steps says when."""
    writer = tf.summary.FileWriter(write_dir, graph=run["graph"] if start_step == 0 else None)
    checkpoints = training.Checkpoints(run["saver"], session, write_dir)
    save_every_minutes = (float("inf") if distribution.mode == "multi_worker"
                          else settings["save_every_minutes"])

    def save(step, what="model"):
        if checkpoints.save(step) and validator:
            if validator(checkpoints.prefix(step), step, writer, what)["improved"]:
                checkpoints.keep_best(step)
        writer.flush()

    if probe_done:
        save(0, "linear probe")
    speed = training.Speedometer(settings["batch_size"])
    step, loss = start_step, None
    with tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True,
              desc="train") as bar:
        while step < total_steps and not stop.requested:
            want_summary = (step + 1) % settings["summary_every_steps"] == 0
            fetches = {"train": run["train_op"], "loss": run["loss"], "step": run["global_step"]}
            if want_summary:
                fetches["summaries"] = run["summaries"]
            result = session.run(fetches)
            loss = result["loss"]
            if not np.isfinite(loss):
                bar.close()
                raise cli.UserError(
                    f"loss is {loss} at step {step + 1}: stopped without saving; "
                    f"{checkpoints.describe_last()}. Lower --learning_rate (or add "
                    "--warmup_steps) and re-run to resume")
            # The global step does not advance when mixed precision skips an overflowing step.
            bar.update(result["step"] - step)
            step = result["step"]
            images_per_second = speed.tick()
            if images_per_second:
                bar.set_postfix(loss=f"{loss:.4f}", img_s=f"{images_per_second:.1f}")
            if want_summary:
                writer.add_summary(result["summaries"], step)
                writer.add_summary(speed.summary(), step)
            if checkpoints.due(step, settings["save_every_steps"], save_every_minutes):
                save(step)
    if step > start_step:
        save(step)
    writer.close()
    if stop.requested:
        print(f"{stop.requested}: stopped at step {step}; {checkpoints.describe_last()}. "
              "Re-run the same command to resume")
    elif loss is not None:
        saved = checkpoints.prefix(step) if distribution.chief else f"step {step} (by the chief)"
        print(f"saved {saved}; last loss {loss:.4f}")


if __name__ == "__main__":
    cli.run(main)
