"""A trained model is never lost (issue 12), tried as a user would: train.py, evaluate.py,
predict.py and export.py as processes of their own on train_dirs that were oddly named, moved,
damaged, interrupted or shared. Every case that could destroy a model asserts that the
checkpoint files that existed before are byte-identical after. The runs stopped by a signal
are fresh interpreters: train.py's real start on those exit paths (conftest.run_script)."""
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import tensorflow.compat.v1 as tf

from conftest import (REPO, TINY_TRAIN_FLAGS, assert_one_line_error, checkpoint_steps,
                      run_script, run_train, start_script)
from nets import train_dir as train_dir_lib
from train_records import write_records

EVERY_2_STEPS = ["--summary_every_steps=2", "--save_every_steps=2"]


def start_train(records_dir, train_dir, *extra, fresh=True):
    """train.py in the background, its stdout unbuffered so a test can follow it line by line:
    in a fresh interpreter, or a child of conftest's zygote."""
    arguments = [f"--records_dir={records_dir}", f"--train_dir={train_dir}", *TINY_TRAIN_FLAGS,
                 *EVERY_2_STEPS, *extra]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if not fresh:
        return start_script("train.py", *arguments, env=env, stdout_pipe=True)
    return subprocess.Popen([sys.executable, "train.py", *arguments], cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)


def wait_for_line(process, start):
    for line in process.stdout:
        if line.startswith(start):
            return line
    raise AssertionError(f"train.py ended without a line starting with {start!r}")


def checkpoint_files(train_dir):
    """{file name: bytes} of every checkpoint file in train_dir."""
    return {os.path.basename(path): open(path, "rb").read()
            for path in glob.glob(os.path.join(glob.escape(train_dir), "model.ckpt-*"))}


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("records"))
    write_records(directory, {"train": 32, "test": 6})
    return directory


@pytest.fixture(scope="module")
def trained(records, tmp_path_factory):
    """A train_dir whose folder name holds glob characters, trained 4 steps (checkpoints 2, 4)."""
    train_dir = str(tmp_path_factory.mktemp("runs") / "train[bs8]*?")
    result = run_train(records, train_dir, *EVERY_2_STEPS, "--max_steps=4")
    assert result.returncode == 0, result.stderr[-3000:]
    return train_dir


def test_a_moved_train_dir_named_with_glob_characters_resumes_and_is_used(records, trained,
                                                                          tmp_path):
    # Copied to another machine (a Drive download to a laptop) under a name with glob
    # characters, without its `checkpoint` file: the checkpoints are found by their files.
    train_dir = str(tmp_path / "laptop" / "my model [bs8]*?")
    shutil.copytree(trained, train_dir)
    os.remove(os.path.join(train_dir, "checkpoint"))
    before = checkpoint_files(train_dir)
    assert sorted(before) and checkpoint_steps(train_dir) == [2, 4]
    result = run_train(records, train_dir, *EVERY_2_STEPS, "--max_steps=6")
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"resuming from {train_dir}/model.ckpt-4 (step 4)" in result.stdout
    assert "from scratch" not in result.stderr
    after = checkpoint_files(train_dir)
    assert {name: after[name] for name in before} == before
    assert checkpoint_steps(train_dir) == [2, 4, 6]
    # The `checkpoint` file is written again, with paths relative to the train_dir.
    with open(os.path.join(train_dir, "checkpoint")) as stream:
        assert 'model_checkpoint_path: "model.ckpt-6"' in stream.read()
    photo = os.path.join(tmp_path, "photo.png")
    from PIL import Image
    Image.new("RGB", (60, 50), (200, 40, 40)).save(photo)
    predicted = run_script("predict.py", f"--model={train_dir}", photo)
    assert predicted.returncode == 0 and predicted.stdout.startswith(f"{photo}: #")
    evaluated = run_script("evaluate.py", f"--model={train_dir}", "--batch_size=4")
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    assert f"{train_dir}/model.ckpt-6 (step 6)" in evaluated.stdout
    exported = run_script("export.py", f"--model={train_dir}",
                          f"--export_dir={tmp_path / 'export[1]'}")
    assert exported.returncode == 0, exported.stderr[-2000:]
    # Resumed again, keeping 2: the newest two are kept, 2 and 4 of the first run pruned too.
    result = run_train(records, train_dir, *EVERY_2_STEPS, "--max_steps=8",
                       "--keep_checkpoints=2")
    assert result.returncode == 0, result.stderr[-3000:]
    assert checkpoint_steps(train_dir) == [6, 8]
    with open(os.path.join(train_dir, "checkpoint")) as stream:
        assert stream.read().count("all_model_checkpoint_paths") == 2


def test_no_usable_checkpoint_stops_instead_of_training_from_scratch(records, trained,
                                                                    tmp_path):
    train_dir = str(tmp_path / "train")
    shutil.copytree(trained, train_dir)
    for path in glob.glob(os.path.join(train_dir, "model.ckpt-*.data-*")):
        with open(path, "r+b") as stream:
            stream.truncate(100)  # a copy from Drive cut short
    before = checkpoint_files(train_dir)
    result = run_train(records, train_dir, *EVERY_2_STEPS, "--max_steps=6")
    assert_one_line_error(result, "train.py", "no usable checkpoint in", "model.ckpt-4:",
                          "model.ckpt-2:", "truncated")
    assert checkpoint_files(train_dir) == before
    # Every script says so in one line too.
    assert_one_line_error(run_script("evaluate.py", f"--model={train_dir}"), "evaluate.py",
                          "no usable checkpoint")


def test_a_truncated_newest_checkpoint_falls_back_to_the_one_before(trained, tmp_path):
    train_dir = str(tmp_path / "train")
    shutil.copytree(trained, train_dir)
    data = glob.glob(os.path.join(train_dir, "model.ckpt-4.data-*"))[0]
    with open(data, "r+b") as stream:
        stream.truncate(100)
    result = run_script("evaluate.py", f"--model={train_dir}", "--batch_size=4")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "model.ckpt-4 is unusable" in result.stderr
    assert f"{train_dir}/model.ckpt-2 (step 2)" in result.stdout


def test_sigterm_saves_the_finished_step_and_the_run_resumes(records, tmp_path):
    train_dir = str(tmp_path / "train")
    process = start_train(records, train_dir, "--max_steps=1000", "--save_every_steps=1000")
    wait_for_line(process, "training ")
    time.sleep(3)  # a few steps in
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr[-2000:]
    (step,) = checkpoint_steps(train_dir)
    assert 0 < step < 1000
    assert f"terminated (SIGTERM): stopped at step {step}" in stdout
    reader = tf.train.load_checkpoint(train_dir_lib.checkpoint_prefix(train_dir, step))
    assert reader.get_tensor("global_step") == step  # the name says what it holds
    # Resumed, to a nearer end: a new learning-rate stage, asked for (a shorter run reshapes it).
    result = run_train(records, train_dir, *EVERY_2_STEPS, f"--max_steps={step + 2}",
                       "--new_stage")
    assert result.returncode == 0 and f"(step {step})" in result.stdout, result.stderr[-2000:]


def test_ctrl_c_at_the_first_step_saves_only_what_it_says(records, tmp_path):
    train_dir = str(tmp_path / "train")
    process = start_train(records, train_dir, "--max_steps=1000")
    wait_for_line(process, "training ")  # the loop starts: step 0, nothing trained yet
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130 and "Traceback" not in stderr, stderr[-2000:]
    # The step under way finishes and is saved under its own number, and the message says so.
    for step in checkpoint_steps(train_dir):
        prefix = train_dir_lib.checkpoint_prefix(train_dir, step)
        assert tf.train.load_checkpoint(prefix).get_tensor("global_step") == step
        assert f"interrupted (SIGINT): stopped at step {step}; the last checkpoint is {prefix}" \
            in stdout
    if not checkpoint_steps(train_dir):
        assert "no checkpoint was written" in stdout


def test_a_second_train_py_on_the_same_train_dir_refuses(records, trained, tmp_path):
    train_dir = str(tmp_path / "train")
    shutil.copytree(trained, train_dir)
    first = start_train(records, train_dir, "--max_steps=1000", "--save_every_steps=1000",
                        fresh=False)
    try:
        wait_for_line(first, "resuming from")  # it holds the lock
        before = checkpoint_files(train_dir)
        config = open(os.path.join(train_dir, "train_config.json"), "rb").read()
        # Other settings too: refused before it writes anything (its train_config.json)
        second = run_train(records, train_dir, *EVERY_2_STEPS, "--max_steps=1000",
                           "--learning_rate=0.005")
        assert_one_line_error(second, "train.py", "is in use by another train.py",
                              f"pid {first.pid}")
        assert checkpoint_files(train_dir) == before
        assert open(os.path.join(train_dir, "train_config.json"), "rb").read() == config
    finally:
        first.kill()
        first.wait()


def test_a_checkpoint_of_another_model_is_refused_before_restoring(trained, tmp_path):
    train_dir = str(tmp_path / "train")
    shutil.copytree(trained, train_dir)
    config_path = os.path.join(train_dir, "train_config.json")
    with open(config_path) as stream:
        config = json.load(stream)
    with open(config_path, "w") as stream:
        json.dump(dict(config, depth_multiplier=0.25), stream)
    photo = str(tmp_path / "photo.png")
    from PIL import Image
    Image.new("RGB", (60, 50), (20, 40, 200)).save(photo)
    for script, arguments in [("predict.py", [photo]), ("evaluate.py", []),
                              ("export.py", [f"--export_dir={tmp_path / 'export'}"])]:
        assert_one_line_error(run_script(script, f"--model={train_dir}", *arguments), script,
                              "does not fit the model of its train_config.json",
                              "depth_multiplier 0.25")


def test_a_file_or_an_unwritable_place_as_train_dir_is_one_line(records, tmp_path):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("x")
    assert_one_line_error(run_train(records, str(a_file), "--max_steps=2"), "train.py",
                          "is a file, not a folder")
    assert_one_line_error(run_train(records, "/proc/version/train", "--max_steps=2"),
                          "train.py", "cannot write to /proc/version/train")
