"""Shared, session-scoped fixtures: the one-line demo run once with the smallest settings, and
the preprocessed sample and trained model it leaves behind; the helpers every test file uses to
run the scripts.

Everything is made by the real scripts in processes of their own (demo.sh runs
preprocess.py --sample, train.py --preset=cpu, predict.py and evaluate.py). The model is a few
steps of a 0.1-depth InceptionV3 on 75 px images: good for checking plumbing (predict, export,
evaluate's files), not accuracy. One run serves every test that needs records or a model, since
starting TensorFlow and training dominate the suite's time on 2 cores. For the same reason
`run_script` runs a script in a child forked from a process that has imported TensorFlow once
(tests/forked_scripts.py), and in a fresh interpreter where the start itself is under test.
"""
import fcntl
import json
import os
import subprocess
import sys

import pytest

from forked_scripts import Zygote

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TINY_SAMPLE_IMAGES = 40  # 32 train + 8 test images (no val split: no validation to wait for)
# Stored at 86 px: what preprocess.py stores for TINY_MODEL_FLAGS' 75 px model (75 / 0.875).
TINY_PREPROCESS_FLAGS = [f"--sample_images={TINY_SAMPLE_IMAGES}", "--shorter_side=86",
                         "--val_size=0"]
# The smallest model the tests train: a 0.1-depth InceptionV3 on 75 px images, batches of 8.
TINY_MODEL_FLAGS = ["--depth_multiplier=0.1", "--image_size=75", "--batch_size=8"]
# train.py's CPU recipe with the tiny model; the demo (which gives --preset=cpu itself) 3 steps.
TINY_TRAIN_FLAGS = ["--preset=cpu", *TINY_MODEL_FLAGS]
DEMO_TRAIN_FLAGS = ["--max_steps=3", *TINY_MODEL_FLAGS]

def pytest_xdist_auto_num_workers(config):
    """-n auto (pytest.ini): one worker per core the suite may use, at most 4 (each worker holds
    a zygote with TensorFlow imported: about 1 GB)."""
    return max(1, min(len(os.sched_getaffinity(0)), 4))


# The test files that take longest, longest first (measured: docs/tests.md). pytest-xdist hands
# out whole files in collection order (pytest.ini): started first, they do not leave one worker
# running a long file at the end while the other waits.
SLOWEST_FILES = ("test_recipe.py", "test_distribute.py", "test_keep_trained_models.py",
                 "test_notebook.py", "test_variants.py", "test_train.py", "test_security.py",
                 "test_adapt.py", "test_image_sizes.py", "test_warm_start.py", "test_export.py",
                 "test_app.py", "test_bad_input.py", "test_model.py", "test_predict.py",
                 "test_evaluate.py")


def pytest_collection_modifyitems(items):
    rank = {name: index for index, name in enumerate(SLOWEST_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: a file's order


_ZYGOTES = {"tensorflow": Zygote("tensorflow"), "preprocess": Zygote("preprocess")}


def _zygote(script):
    return _ZYGOTES["preprocess" if script == "preprocess.py" else "tensorflow"]


def run_script(script, *args, cwd=REPO, timeout=600, env=None, fresh=False):
    """Runs one of the repo's Python scripts as a user would; returns the CompletedProcess.

    In a child of tests/forked_scripts.py's zygote (TensorFlow already imported), or with
    `fresh` in a new interpreter: for the runs that test the start itself, and one per script
    and exit path (tests/test_flags.py)."""
    argv = [os.path.join(REPO, script), *args]
    if fresh:
        return subprocess.run([sys.executable, *argv], cwd=cwd, capture_output=True, text=True,
                              timeout=timeout, env=env)
    return _zygote(script).run(argv, cwd, os.environ if env is None else env, timeout)


def start_script(script, *args, cwd=REPO, env=None, stdout_pipe=False):
    """run_script's run that runs on while the test goes on: a subprocess.Popen-like handle
    (tests/forked_scripts.Child), its stdout a stream with `stdout_pipe`."""
    return _zygote(script).start([os.path.join(REPO, script), *args], cwd,
                                 os.environ if env is None else env, stdout_pipe=stdout_pipe)


def run_python(code, *args, cwd=REPO, timeout=600, new_session=False, for_script=None):
    """`python3 -c code *args` in a child of the zygote of `for_script` (see run_script: the
    one with TensorFlow unless preprocess.py); returns the CompletedProcess."""
    return _zygote(for_script).run(["-c", code, *args], cwd, os.environ, timeout,
                                   new_session=new_session)


def start_python(code, *args, cwd=REPO, stdout_pipe=False):
    """run_python's run that runs on: a subprocess.Popen-like handle (see start_script)."""
    return _zygote(None).start(["-c", code, *args], cwd, os.environ, stdout_pipe=stdout_pipe)


def run_train(records_dir, train_dir, *extra, env=None):
    """train.py with TINY_TRAIN_FLAGS on records_dir into train_dir, then `extra` flags."""
    return run_script("train.py", f"--records_dir={records_dir}", f"--train_dir={train_dir}",
                      *TINY_TRAIN_FLAGS, *extra, env=env)


def check_run(result):
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-4000:]
    return result


def assert_one_line_error(result, script, *fragments):
    """The run failed as the scripts fail on bad input: exit code 2, no traceback, and its last
    line on stderr `<script>: error: ...` holding every fragment."""
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"{script}: error: "), last
    for fragment in fragments:
        assert fragment in last, last
    return last


def checkpoint_steps(train_dir):
    """The steps of train_dir's checkpoints, oldest first, as the scripts find them."""
    from nets import train_dir as train_dir_lib
    return [step for step, _ in train_dir_lib.list_checkpoints(train_dir)]


def built_once(tmp_path_factory, name, build):
    """build(folder) -> a JSON-able dict, once per test run. The suite runs in pytest-xdist
    workers (processes of their own, pytest.ini); a session fixture would be built by each.
    The first worker builds it under a lock and the others wait and read its result: a wait
    costs less than building it twice at once on 2 cores. A failed build is not remembered."""
    if "PYTEST_XDIST_WORKER" not in os.environ:
        return build(tmp_path_factory.mktemp(name))
    shared = tmp_path_factory.getbasetemp().parent  # one per run, above every worker's
    result = shared / f"{name}.json"
    with open(shared / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not result.exists():
            result.write_text(json.dumps(build(tmp_path_factory.mktemp(name))))
        return json.loads(result.read_text())


def _completed(result):
    return {key: getattr(result, key) for key in ("args", "returncode", "stdout", "stderr")}


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory):
    """`bash demo.sh` with TINY_* settings in a fresh work dir.

    dict: result (CompletedProcess), work_dir, records_dir, train_dir.
    """
    def build(folder):
        work_dir = str(folder / "work")
        env = dict(os.environ, DEMO_WORK_DIR=work_dir, PYTHON=sys.executable,
                   DEMO_PREPROCESS_FLAGS=" ".join(TINY_PREPROCESS_FLAGS),
                   DEMO_TRAIN_FLAGS=" ".join(DEMO_TRAIN_FLAGS))
        result = check_run(subprocess.run(["bash", os.path.join(REPO, "demo.sh")], cwd=REPO,
                                          env=env, capture_output=True, text=True, timeout=900))
        return {"result": _completed(result), "work_dir": work_dir,
                "records_dir": os.path.join(work_dir, "records"),
                "train_dir": os.path.join(work_dir, "train")}
    built = built_once(tmp_path_factory, "demo", build)
    return dict(built, result=subprocess.CompletedProcess(**built["result"]))


# train.py --preset=cpu as the demo runs it, cut to 60 steps (checkpoints at 30 and 60, a loss
# summary every 10): long enough to learn the sample's scene tags (P@1 0.74 on its 120 test
# images against 0.42 for the popularity baseline, measured), short enough for the suite.
LEARNED_TRAIN_FLAGS = ["--preset=cpu", "--max_steps=60", "--save_every_steps=30",
                       "--summary_every_steps=10"]


@pytest.fixture(scope="session")
def learned_sample(tmp_path_factory):
    """The full 600-image sample (preprocess.py --sample: 432 train, 48 val, 120 test images)
    and a model train.py --preset=cpu trained on it from scratch with LEARNED_TRAIN_FLAGS.
    dict: records_dir, train_dir, result (of train.py)."""
    def build(root):
        records_dir, train_dir = str(root / "records"), str(root / "train")
        check_run(run_script("preprocess.py", "--sample", f"--sample_dir={root / 'sample'}",
                             f"--records_dir={records_dir}"))
        result = check_run(run_script("train.py", *LEARNED_TRAIN_FLAGS,
                                      f"--records_dir={records_dir}", f"--train_dir={train_dir}"))
        return {"records_dir": records_dir, "train_dir": train_dir, "result": _completed(result)}
    built = built_once(tmp_path_factory, "learned", build)
    return dict(built, result=subprocess.CompletedProcess(**built["result"]))


@pytest.fixture(scope="session")
def sample_records(demo_run):
    """records_dir of the built-in sample (TINY_SAMPLE_IMAGES images) made by preprocess.py;
    its manifest.json's dataset_dir is the sample in HARRISON's on-disk format."""
    return demo_run["records_dir"]


@pytest.fixture(scope="session")
def trained_dir(demo_run):
    """train_dir of the tiny model train.py --preset=cpu trained on `sample_records`."""
    return demo_run["train_dir"]


@pytest.fixture(scope="session")
def sample_photos(sample_records, tmp_path_factory):
    """A folder of photos as a user has them (from the sample): JPEGs with any-case extensions,
    a lossless PNG and WebP of one photo, a subfolder; beside it broken files."""
    import json
    import shutil

    from PIL import Image

    with open(os.path.join(sample_records, "manifest.json"), encoding="utf-8") as stream:
        dataset_dir = json.load(stream)["dataset_dir"]
    with open(os.path.join(dataset_dir, "data_list.txt"), encoding="utf-8") as stream:
        first, second, third, fourth = [os.path.join(dataset_dir, path)
                                        for path in stream.read().split()[:4]]
    root = tmp_path_factory.mktemp("photos")
    folder = root / "holiday"
    (folder / "day2").mkdir(parents=True)
    shutil.copy(first, folder / "b_beach.jpg")
    shutil.copy(second, folder / "a_sea.JPG")
    Image.open(third).save(folder / "c_lossless.png")
    Image.open(third).save(folder / "d_other_format.webp", lossless=True)
    shutil.copy(fourth, folder / "day2" / "e_later.jpg")
    (folder / "notes.txt").write_text("not a photo")  # not an image name: not listed
    broken = root / "broken"
    broken.mkdir()
    (broken / "text.jpg").write_text("this is not an image")
    (broken / "empty.png").write_bytes(b"")
    data = open(first, "rb").read()
    (broken / "truncated.jpg").write_bytes(data[:len(data) // 3])
    (root / "empty_folder").mkdir()
    # The test split's images exactly as evaluate.py reads them: the JPEG bytes of the records.
    import tensorflow as tf

    from data import pipeline, records
    from_records = root / "from_records"
    from_records.mkdir()
    record_images = {}
    for serialized in tf.data.TFRecordDataset(pipeline.shard_files(sample_records, "test")):
        example = records.decode_example(serialized.numpy())
        path = from_records / f"{len(record_images):03d}.jpg"
        path.write_bytes(example["jpeg"])
        record_images[str(path)] = example["path"]
    return {"root": str(root), "folder": str(folder), "broken": str(broken),
            "in_folder": [str(folder / name) for name in
                          ("a_sea.JPG", "b_beach.jpg", "c_lossless.png", "d_other_format.webp")],
            "in_subfolder": [str(folder / "day2" / "e_later.jpg")],
            "from_records": str(from_records), "record_images": record_images}


@pytest.fixture(scope="session")
def predicted_json(trained_dir, sample_photos):
    """predict.py --format=json --top_k=0 --recursive --batch_size=3 on the photo folder and
    the folder of test-record images: one dict (path, tags, scores) per image, in output order."""
    import json

    result = check_run(run_script("predict.py", f"--model={trained_dir}",
                                  "--format=json", "--top_k=0", "--recursive",
                                  "--batch_size=3", sample_photos["folder"],
                                  sample_photos["from_records"]))
    return [json.loads(line) for line in result.stdout.splitlines()]
