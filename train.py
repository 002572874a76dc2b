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

import cli  # first: it quiets TensorFlow's C++ start-up logs before TensorFlow loads
import numpy as np
import tensorflow.compat.v1 as tf
from absl import flags
from tqdm import tqdm

from data import harrison, pipeline
from evaluation import metrics, validation
from nets import (distribution as distributing, linear_probe, loop, model, optimization,
                  recipe, train_dir, training, warm_start)

FLAGS = flags.FLAGS
# Every flag comes from the recipe's table (nets/recipe.py): default, range, help, presets.
cli.define_flags(recipe.TABLE, recipe.help_text)
cli.deprecated_alias("checkpoint_path", "warm_start")


def read_settings():
    """The run's settings (the table's stored ones), the preset filling those not given."""
    values = {s.name: FLAGS[s.name].value for s in recipe.TABLE if s.stored}
    given = {name for name in values if FLAGS[name].present}
    return recipe.resolve(values, given, FLAGS.preset)


def main(argv):
    if len(argv) > 1:
        raise cli.UserError(f"unexpected arguments: {' '.join(argv[1:])}")
    settings = read_settings()
    vocab, images, train_counts = read_records(records := settings["records_dir"])
    prior_biases = model.prior_biases(train_counts, images["train"], settings["loss"])
    tf.disable_eager_execution()
    steps_per_epoch, total_steps = schedule(settings, images["train"])
    gpus = len(tf.config.list_physical_devices("GPU"))
    mixed_precision = {"auto": gpus > 0, "on": True, "off": False}[settings["mixed_precision"]]
    distribution = distributing.Distribution(FLAGS.distribute, FLAGS.devices, gpus)
    distribution.check_batch(settings["batch_size"])
    config = dict(settings, num_tags=len(vocab), train_images=images["train"],
                  total_steps=total_steps, records_dir=os.path.abspath(records))
    with claim_train_dir(config, vocab, distribution.chief) as write_dir, \
            contextlib.ExitStack() as sources:
        train_dir.remove_partial_checkpoints(write_dir)
        resumed = resume_point(config, vocab, steps_per_epoch, distribution.chief)
        if resumed is None:
            return
        latest, start_step, stage = resumed
        validator = (validation.Validator(config, records, train_counts, FLAGS.train_dir)
                     if images["val"] and distribution.chief else None)
        pretrained, probe_head = None, None
        if latest is None and settings["warm_start"]:  # a new run: stage 1 first
            pretrained, probe_head = start_from_warm_start(settings, config, vocab, sources,
                                                           prior_biases, images, distribution)
        # From here on, Ctrl-C and SIGTERM let the step under way finish, save and stop.
        with loop.StopRequest() as stop:
            run = training.build_run(settings, len(vocab), stage, start_step,
                                     mixed_precision, prior_biases,
                                     resume_from=latest, warm_start_from=pretrained,
                                     head_from=probe_head, distribution=distribution)
            session = tf.Session(distribution.target, graph=run["graph"],
                                 config=distribution.session_config(mixed_precision, gpus > 0,
                                                                    settings["xla"]))
            print(run["initialize"](session))
            sources.close()  # the weights are read: an export's extracted files go now
            print(f"training {settings['backbone']} x{settings['depth_multiplier']} on "
                  f"{images['train']} images, {len(vocab)} tags, {settings['image_size']}px, "
                  f"batch {settings['batch_size']}, steps {start_step}->{total_steps}, "
                  f"{describe_speed(mixed_precision, settings['xla'], distribution)}")
            train_loop(run, session, settings, start_step, total_steps, stop, validator,
                       write_dir, distribution, probe_done=probe_head is not None)
        if validator:
            if FLAGS.choose_variant and not stop.requested:
                validator.choose_variant()
            validator.close()
    if stop.requested:
        sys.exit(130)


def schedule(settings, train_images):
    """(steps per epoch, total steps) of the run; the settings' moving-average decay resolved
    for its length."""
    steps_per_epoch, total_steps = optimization.schedule_length(
        settings["batch_size"], train_images, settings["max_steps"], settings["num_epochs"])
    settings["moving_average_decay"] = optimization.moving_average_decay(
        settings["moving_average_decay"], total_steps)
    return steps_per_epoch, total_steps


def read_records(records):
    """(vocab, images per split {train, val}, train tag counts) of preprocess.py's records."""
    vocab = harrison.load_records_vocab(records)
    images = {split: harrison.split_images(records, split) for split in ("train", "val")}
    if not images["train"]:
        raise cli.UserError(f"{records}/manifest.json counts no train images")
    return vocab, images, pipeline.tag_counts(records, vocab)


def describe_speed(mixed_precision, xla, distribution):
    return (f"mixed precision {'on' if mixed_precision else 'off'}, XLA "
            f"{'on' if xla else 'off'}, {distribution.describe()}")


def resume_point(config, vocab, steps_per_epoch, chief):
    """(the newest checkpoint or None, its step, the learning-rate stage to train in), or None
    when the train_dir is already trained to config's total_steps (said on stdout). A run that
    trains records its config, the schedule's stages included; one that trains nothing changes
    nothing."""
    latest = train_dir.latest_checkpoint(FLAGS.train_dir)
    start_step = train_dir.checkpoint_step(latest) if latest else 0
    total_steps = config["total_steps"]
    if start_step >= total_steps:
        print(f"{FLAGS.train_dir} is already trained to step {start_step} (of "
              f"{total_steps}); raise --max_steps or --num_epochs to train further (a new "
              "learning-rate stage)")
        return None
    stages, announcement = optimization.next_stages(
        recorded_stages(latest), config, start_step, total_steps, steps_per_epoch,
        FLAGS.new_stage)
    if announcement:
        print(announcement)
    config["schedule"] = stages
    if chief:
        train_dir.record_config(FLAGS.train_dir, config, vocab)
    return latest, start_step, stages[-1]


def recorded_stages(latest):
    """The learning-rate stages --train_dir's run has trained in ([] for a new run); a
    train_config.json of an earlier version, without them, had one stage made from its own
    settings."""
    if latest is None:
        return []
    old, _ = train_dir.load(FLAGS.train_dir)
    if "schedule" in old:
        return old["schedule"]
    try:
        steps_per_epoch, _ = optimization.schedule_length(old["batch_size"],
                                                          old["train_images"], 1)
        return [optimization.stage(old, 0, old["total_steps"], steps_per_epoch)]
    except (KeyError, TypeError):  # older still: the flags make the stage, as they did then
        return []


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


def start_from_warm_start(settings, config, vocab, sources, prior_biases, images,
                          distribution):
    """(warm_start.Source, the linear probe's head or None) of a new run, having said what the
    warm start brings and what is new. The Source's files (an export's, extracted) stay until
    the ExitStack `sources` closes: training restores the backbone again when it starts."""
    pretrained = sources.enter_context(warm_start.open_source(
        settings["warm_start"], settings, FLAGS.imagenet_url, FLAGS.pretrained_dir))
    adapted = warm_start.describe_source(pretrained, vocab)
    if adapted:
        print(adapted)
    if not settings["probe_epochs"]:
        return pretrained, None
    return pretrained, run_linear_probe(settings, config, pretrained.checkpoint, prior_biases,
                                        images, distribution)


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
                                        "train", images["train"], restore, pretrained)
    val = (linear_probe.cache_features(FLAGS.train_dir, config, settings["records_dir"], "val",
                                       images["val"], restore, pretrained)
           if images["val"] else train)
    head, value, epoch = linear_probe.train_head(
        FLAGS.train_dir, config, train, val, prior_biases, settings["probe_epochs"],
        settings["probe_learning_rate"], settings["weight_decay"], score, settings["seed"])
    print(f"linear probe: {validation.METRIC} {100 * value:.2f} on the "
          f"{'val' if images['val'] else 'train'} features at epoch {epoch} of "
          f"{settings['probe_epochs']} -> {head}")
    return head


def run_step(session, run, want_summary):
    """One training step: {"loss", "step" (after it), and "summaries" when wanted}."""
    fetches = {"train": run["train_op"], "loss": run["loss"], "step": run["global_step"]}
    if want_summary:
        fetches["summaries"] = run["summaries"]
    return session.run(fetches)


def train_loop(run, session, settings, start_step, total_steps, stop, validator, write_dir,
               distribution, probe_done=False):
    """Runs steps to total_steps (or until `stop` is requested), saving (and scoring the val
    split) on schedule, and saves the last step, in `write_dir`. With `probe_done`, step 0 (the
    warm-start backbone and the probed head) is saved and scored first: the linear probe's own
    result. The workers of a multi-worker run save together (saving reads every worker's
    batch-norm statistics), so there only --save_every_steps says when."""
    writer = tf.summary.FileWriter(write_dir, graph=run["graph"] if start_step == 0 else None)
    checkpoints = loop.Checkpoints(run["saver"], session, write_dir)
    save_every_minutes = (float("inf") if distribution.mode == "multi_worker"
                          else settings["save_every_minutes"])

    def save(step, what="model"):
        if checkpoints.save(step) and validator:
            if validator(checkpoints.prefix(step), step, writer, what)["improved"]:
                checkpoints.keep_best(step)
        writer.flush()

    if probe_done:
        save(0, "linear probe")
    speed = loop.Speedometer(settings["batch_size"])
    step, loss = start_step, None
    with tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True,
              desc="train") as bar:
        while step < total_steps and not stop.requested:
            want_summary = (step + 1) % settings["summary_every_steps"] == 0
            result = run_step(session, run, want_summary)
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
    report_end(stop, step, loss, checkpoints, distribution.chief)


def report_end(stop, step, loss, checkpoints, chief):
    if stop.requested:
        print(f"{stop.requested}: stopped at step {step}; {checkpoints.describe_last()}. "
              "Re-run the same command to resume")
    elif loss is not None:
        saved = checkpoints.prefix(step) if chief else f"step {step} (by the chief)"
        print(f"saved {saved}; last loss {loss:.4f}")


if __name__ == "__main__":
    cli.run(main)
