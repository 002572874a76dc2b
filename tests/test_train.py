"""train.py end to end: kill -9 and resume, the train_dir checks, the NaN guard, the
mixed-precision graph on a CPU, and --preset=cpu learning the built-in sample."""
import glob
import json
import os
import shutil
import signal
import time

import numpy as np
import pytest

import tensorflow.compat.v1 as tf

from conftest import TINY_TRAIN_FLAGS, checkpoint_steps, run_train, start_script
from data import harrison
from nets import train_dir as train_dir_lib
from nets import distribution, optimization, recipe, train_step
from train_records import VOCAB, write_records

EVERY_4_STEPS = ["--save_every_steps=4", "--summary_every_steps=4"]
# killed_and_resumed's schedule: 0.01 peak, 4 warm-up steps, cosine to 1 % at step 24.
RESUMED_SCHEDULE = ["--save_every_steps=4", "--learning_rate=0.01", "--warmup_steps=4",
                    "--learning_rate_decay=cosine", "--max_steps=24"]


@pytest.fixture(scope="module")
def killed_and_resumed(tmp_path_factory):
    """Starts a run, SIGKILLs it as soon as its first checkpoint is indexed, re-runs the same
    command to the end. Returns (records_dir, train_dir, step at the kill, second run)."""
    root = tmp_path_factory.mktemp("resume")
    records_dir, train_dir = str(root / "records"), str(root / "train")
    write_records(records_dir)
    settings = [*RESUMED_SCHEDULE, "--summary_every_steps=1"]  # the rate at every step
    first = start_script("train.py", f"--records_dir={records_dir}", f"--train_dir={train_dir}",
                         *TINY_TRAIN_FLAGS, *settings)
    deadline = time.time() + 300
    while not os.path.exists(os.path.join(train_dir, "checkpoint")):
        assert first.poll() is None and time.time() < deadline, "no checkpoint was written"
        time.sleep(0.02)
    first.send_signal(signal.SIGKILL)
    first.wait()
    killed_at = train_dir_lib.resolve(train_dir)[0]
    second = run_train(records_dir, train_dir, *settings)  # the same command
    return records_dir, train_dir, killed_at, second


def test_rerun_after_kill_resumes_from_the_saved_step(killed_and_resumed):
    _, train_dir, killed_at, second = killed_and_resumed
    assert second.returncode == 0, second.stderr[-2000:]
    killed_step = int(killed_at.rsplit("-", 1)[1])
    assert 0 < killed_step < 24
    resumed = [line for line in second.stdout.splitlines() if line.startswith("resuming from")]
    assert resumed, second.stdout
    assert int(resumed[0].rsplit("(step ", 1)[1].rstrip(")")) >= killed_step
    # Every checkpoint the index lists is complete and loads; the last one is step 24.
    state = tf.train.get_checkpoint_state(train_dir)
    assert state.model_checkpoint_path.endswith("model.ckpt-24")
    for path in state.all_model_checkpoint_paths:
        reader = tf.train.load_checkpoint(path)
        assert reader.get_tensor("global_step") == int(path.rsplit("-", 1)[1])
        assert reader.get_tensor("InceptionV3/Logits/Conv2d_1c_1x1/weights").shape[-1] == len(VOCAB)
    config, vocab = train_dir_lib.load(train_dir)
    assert vocab == VOCAB
    assert {k: config[k] for k in ("backbone", "depth_multiplier", "image_size", "num_tags",
                                   "loss")} == {"backbone": "inception_v3", "depth_multiplier": 0.1,
                                                "image_size": 75, "num_tags": 5, "loss": "sigmoid"}


def test_nan_loss_stops_with_a_message_and_keeps_the_last_good_checkpoint(killed_and_resumed):
    records_dir, train_dir, _, _ = killed_and_resumed
    before = checkpoint_steps(train_dir)
    result = run_train(records_dir, train_dir, *EVERY_4_STEPS, "--max_steps=40",
                       "--learning_rate=1e30", "--learning_rate_decay=fixed", "--warmup_steps=0")
    assert result.returncode == 2
    assert "loss is nan" in result.stderr or "loss is inf" in result.stderr, result.stderr[-2000:]
    assert "model.ckpt-24" in result.stderr and "Traceback" not in result.stderr
    assert checkpoint_steps(train_dir) == before
    assert train_dir_lib.resolve(train_dir)[0].endswith("model.ckpt-24")


def test_train_dir_of_another_vocabulary_is_a_clear_error(killed_and_resumed,
                                                                       tmp_path):
    records_dir, train_dir, _, _ = killed_and_resumed
    other_records = str(tmp_path / "records")
    shutil.copytree(records_dir, other_records)
    with open(os.path.join(other_records, "vocab.txt"), "w") as f:
        f.write("".join(t + "\n" for t in ["red", "green", "teal", "bright", "dark"]))
    result = run_train(other_records, train_dir, *EVERY_4_STEPS, "--max_steps=40")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "another vocabulary" in result.stderr and "line 3" in result.stderr
    assert checkpoint_steps(train_dir)[-1] == 24


def cosine_stage(step, start_step, end_step, start_rate, peak=0.01, warmup=4):
    """The rate of step `step` (its own, before it): hand-written from the schedule's definition."""
    k = step - start_step
    if k < warmup:
        return start_rate + (peak - start_rate) * (k + 1) / warmup
    progress = min((k - warmup) / (end_step - start_step - warmup), 1.0)
    return 0.01 * peak + (peak - 0.01 * peak) * 0.5 * (1 + np.cos(np.pi * progress))


def learning_rates(train_dir):
    """{step: the rate it trained at} from the summaries; a step trained twice (before a kill
    and after the resume) gives its last value."""
    return {step: value for step, value in summaries(train_dir, "learning_rate")}


def test_the_learning_rate_continues_its_curve_across_a_kill_and_a_new_stage(killed_and_resumed,
                                                                              tmp_path):
    # Issue 18 item 2: a resume recomputed the schedule from the flags, and an extended cosine
    # run jumped from 1 % to ~54 % of its peak in one step, with no warm-up.
    records_dir, train_dir, _, _ = killed_and_resumed
    rates = learning_rates(train_dir)
    assert sorted(rates) == list(range(1, 25))  # a summary at every step (after it)
    for step in range(1, 25):  # the killed and the resumed run on one curve
        assert rates[step] == pytest.approx(cosine_stage(step - 1, 0, 24, 0.0), rel=1e-5), step
    extended = str(tmp_path / "extended")
    shutil.copytree(train_dir, extended)
    result = run_train(records_dir, extended, *RESUMED_SCHEDULE[:-1], "--max_steps=36",
                       "--summary_every_steps=1")
    assert result.returncode == 0, result.stderr[-2000:]
    end_rate = cosine_stage(24, 0, 24, 0.0)  # 1 % of the peak
    assert ("learning-rate stage 2: steps 24->36, warm-up from 0.0001 (the rate reached) to "
            "0.01 over 4 steps, then cosine") in result.stdout
    rates = learning_rates(extended)
    for step in range(25, 37):
        assert rates[step] == pytest.approx(cosine_stage(step - 1, 24, 36, end_rate),
                                            rel=1e-5), step
    assert rates[25] < 0.26 * 0.01  # a quarter of the way up, not a jump to the peak
    config = json.load(open(os.path.join(extended, "train_config.json")))
    assert [(s["start_step"], s["end_step"]) for s in config["schedule"]] == [(0, 24), (24, 36)]


def test_flags_that_would_reshape_a_resumed_schedule_are_refused(killed_and_resumed, tmp_path):
    records_dir, trained, _, _ = killed_and_resumed
    train_dir = str(tmp_path / "train")
    shutil.copytree(trained, train_dir)
    for path in glob.glob(os.path.join(train_dir, "model.ckpt-24.*")):
        os.remove(path)  # killed at step 20 of 24
    for changed, flag in [("--learning_rate=0.05", "--learning_rate"),
                          ("--max_steps=30", "--max_steps"), ("--warmup_steps=2", "--warmup")]:
        result = run_train(records_dir, train_dir, *RESUMED_SCHEDULE, changed)
        last = result.stderr.strip().splitlines()[-1]
        assert result.returncode == 2 and last.startswith(f"train.py: error: {flag}"), last
        assert "--new_stage" in last
    assert checkpoint_steps(train_dir)[-1] == 20
    result = run_train(records_dir, train_dir, *RESUMED_SCHEDULE, "--learning_rate=0.005",
                       "--new_stage")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "learning-rate stage 2: steps 20->24" in result.stdout


def test_mixed_precision_graph_trains_on_cpu_with_loss_scaling(monkeypatch):
    # The GPU path (grappler's auto_mixed_precision) cannot run here; its CPU emulation
    # (auto_mixed_precision_cpu) runs the same float16-cast graph and the same loss scaling.
    settings = recipe.settings("cpu", image_size=75, depth_multiplier=0.1, batch_size=4)
    rng = np.random.default_rng(1)
    batch = {"images": rng.integers(0, 256, (4, 75, 75, 3), dtype=np.uint8),
             "draws": rng.uniform(size=(4, 5)).astype(np.float32),
             "labels": (rng.uniform(size=(4, 5)) > 0.5).astype(np.float32)}
    with tf.Graph().as_default():
        model = train_step.build_steps(settings, tf.data.Dataset.from_tensors(batch).repeat(), 5,
                                       optimization.stage(settings, 0, 100, 10),
                                       mixed_precision=True)
        scale = [v for v in tf.global_variables()
                 if v.op.name == optimization.LOSS_SCALE_SCOPE + "/current_loss_scale"]
        assert scale
        config = distribution.Distribution("none").session_config(True, gpu=False, xla=False)
        with tf.Session(config=config) as session:
            session.run([tf.global_variables_initializer()] + model["initializers"])
            metadata = tf.RunMetadata()
            session.run(model["train_op"], options=tf.RunOptions(output_partition_graphs=True),
                        run_metadata=metadata)
            for _ in range(2):
                loss, step, _ = session.run([model["loss"], model["global_step"],
                                             model["train_op"]])
            loss_scale = session.run(scale[0])
    half_casts = [n for g in metadata.partition_graphs for n in g.node
                  if n.op == "Cast" and n.attr["DstT"].type == tf.float16.as_datatype_enum]
    assert half_casts, "the graph was not rewritten to float16"
    # Dynamic loss scaling at work: float16 gradients overflow at the initial scale of 2^15,
    # so steps are skipped and the scale halved until they fit, then steps apply.
    assert np.isfinite(loss) and (step > 0 or loss_scale < 2 ** 15)


def sample_prior_entropy(records_dir):
    """Loss of the best image-independent prediction (each tag's training frequency): the
    summed binary entropy of the tag frequencies."""
    from data import records
    counts, images = np.zeros(len(harrison.load_records_vocab(records_dir))), 0
    for path in glob.glob(os.path.join(records_dir, "train-*.tfrecord")):
        for serialized in tf.data.TFRecordDataset(path).as_numpy_iterator():
            counts[list(set(records.decode_example(serialized)["tags"]))] += 1
            images += 1
    p = np.clip(counts / images, 1e-7, 1 - 1e-7)
    return float(-(p * np.log(p) + (1 - p) * np.log(1 - p)).sum())


def summaries(train_dir, tag):
    from tensorflow.core.util import event_pb2
    values = []
    for path in sorted(glob.glob(os.path.join(train_dir, "events.out.tfevents.*"))):
        for record in tf.data.TFRecordDataset(path).as_numpy_iterator():
            event = event_pb2.Event.FromString(record)
            values += [(event.step, v.simple_value) for v in event.summary.value if v.tag == tag]
    return values


def test_cpu_preset_on_the_sample_learns_image_dependent_tags(learned_sample):
    # The preset's image size, depth multiplier, batch and schedule; fewer steps (tests stay fast).
    records_dir, train_dir = learned_sample["records_dir"], learned_sample["train_dir"]
    assert "training from scratch" in learned_sample["result"].stderr  # the visible warning
    losses = [value for _, value in summaries(train_dir, "loss/tags")]
    prior = sample_prior_entropy(records_dir)
    assert len(losses) == 6
    # Below what any image-independent guess can reach: the model reads the pixels. (Each value
    # is one batch's loss: the mean of the last three, steps 40-60, evens out the batches.)
    assert np.mean(losses[-3:]) < prior - 0.5, (losses, prior)
    with open(os.path.join(train_dir, "train_config.json")) as f:
        config = json.load(f)
    preset = (config["image_size"], config["depth_multiplier"], config["batch_size"])
    assert preset == (139, 0.25, 32)
