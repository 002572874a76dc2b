"""Bad input that gave silently wrong results or a traceback (issue 17, cases 4 to 11), each
replayed: one line and exit code 2 (or a logged skip), and nothing that existed before changed."""
import glob
import json
import logging
import os
import shutil
import subprocess
import sys
import tarfile

import numpy as np
import pytest

from conftest import REPO, TINY_TRAIN_FLAGS, check_run, run_script
from nets import linear_probe, train_dir, warm_start
from script_flags import parse_argvs
from test_recipe import save_random_backbone
from test_security import one_line_error, snapshot
from train_records import write_records


@pytest.fixture
def model_copy(trained_dir, tmp_path):
    """A copy of the tiny trained model, to damage."""
    copy = str(tmp_path / "train")
    shutil.copytree(trained_dir, copy)
    return copy


def test_a_run_that_trains_nothing_keeps_the_config_and_seen_images_are_refused(
        sample_records, model_copy, tmp_path):
    """Replays case 4: train.py --records_dir=records2 on a finished run printed "already
    trained" but wrote records2 into train_config.json, and evaluate.py then scored records2's
    test split, where 7 of 8 images were the model's training images."""
    with open(os.path.join(sample_records, "manifest.json"), encoding="utf-8") as stream:
        manifest = json.load(stream)
    records2 = str(tmp_path / "records2")
    check_run(run_script("preprocess.py", f"--dataset_dir={manifest['dataset_dir']}",
                         f"--records_dir={records2}", "--shorter_side=86", "--val_size=0",
                         f"--test_size={manifest['test_size']}", "--seed=7"))
    before = snapshot(model_copy)
    result = check_run(run_script("train.py", *TINY_TRAIN_FLAGS, "--max_steps=3",
                                  f"--records_dir={records2}",
                                  f"--train_dir={model_copy}"))
    assert "is already trained to step 3" in result.stdout
    assert snapshot(model_copy) == before

    def split_of(records, wanted):
        with open(os.path.join(records, "split.csv"), encoding="utf-8") as stream:
            return {line.split(",")[0] for line in stream.read().splitlines()[1:]
                    if line.split(",")[-1] in wanted}

    seen = split_of(records2, {"test"}) & split_of(sample_records, {"train", "val"})
    assert seen  # the case: another split of the same images
    before = snapshot(model_copy)
    result = run_script("evaluate.py", f"--model={model_copy}", f"--records_dir={records2}")
    assert one_line_error(result, "evaluate.py") == (
        f"evaluate.py: error: {len(seen)} of the {manifest['test_size']} images of the test "
        f"split of {records2} are among those the model was trained and chosen on (the train "
        f"and val splits of {sample_records}, by their split.csv): their scores would not "
        f"measure unseen images; evaluate on {sample_records} (the default), or on records "
        "without those images")
    assert snapshot(model_copy) == before  # the eval files of the demo's run stay


BAD_BEST = {"cut short": '{"step": 3, "metric": "map", "val', "a list": "[3]",
            "a string": '"str"', "no value": '{"step": 3}',
            "a string value": '{"step": 3, "metric": "map", "value": "high"}',
            "a negative step": '{"step": -1, "metric": "map", "value": 0.5}',
            "not UTF-8": b'{"step": 3, "metric": "\xff", "value": 0.5}'}


@pytest.mark.parametrize("case", sorted(BAD_BEST))
def test_a_damaged_best_json_is_one_line_never_ignored(tmp_path, case):
    """Replays cases 5 and 6: a best.json cut short was ignored (the best checkpoint went back
    into rotation, to be deleted); [3], "str", {"step": 3} or a string value were tracebacks."""
    text = BAD_BEST[case]
    (tmp_path / "best.json").write_bytes(text if isinstance(text, bytes) else text.encode())
    for read in (train_dir.best, train_dir.default_checkpoint):
        with pytest.raises(train_dir.TrainDirError) as error:
            read(str(tmp_path))
        assert str(error.value) == (
            f"{tmp_path / 'best.json'} is damaged (not the step, metric and value train.py "
            "writes): restore it, or delete it to fall back on the newest checkpoint (train.py "
            "then records the best one again, from its next validation on)")
    train_dir.record_best(str(tmp_path), 3, "map", 0.5)
    assert train_dir.best(str(tmp_path)) == {"step": 3, "metric": "map", "value": 0.5}


def test_a_damaged_best_json_stops_every_script_before_it_writes(sample_records, model_copy,
                                                                 sample_photos):
    with open(os.path.join(model_copy, "best.json"), "w") as stream:
        stream.write('{"step": 3, "metric": "map", "val')
    before = snapshot(model_copy)
    for script, *args in [("train.py", *TINY_TRAIN_FLAGS, "--max_steps=6",
                           f"--records_dir={sample_records}", f"--train_dir={model_copy}"),
                          ("predict.py", f"--model={model_copy}", sample_photos["in_folder"][0]),
                          ("evaluate.py", f"--model={model_copy}")]:
        line = one_line_error(run_script(script, *args), script)
        assert line.endswith("best.json is damaged (not the step, metric and value train.py "
                             "writes): restore it, or delete it to fall back on the newest "
                             "checkpoint (train.py then records the best one again, from its "
                             "next validation on)"), line
        assert snapshot(model_copy) == before, script


BAD_CONFIG = [
    ({"image_size": "abc"}, "image_size 'abc' is not a whole number of pixels in [75, 1024]"),
    ({"image_size": None}, "image_size None is not a whole number of pixels in [75, 1024]"),
    ({"image_size": 0}, "image_size 0 is not a whole number of pixels in [75, 1024]"),
    ({"image_size": True}, "image_size True is not a whole number of pixels in [75, 1024]"),
    ({"image_size": 10**9}, "image_size 1000000000 is not a whole number of pixels"),
    # An export's scoring config (nets/variants.scoring_config): the crop is a size too.
    ({"crop_size": 10**9}, "crop_size 1000000000 is not a whole number of pixels in [75, 1024]"),
    ({"crop_size": "abc"}, "crop_size 'abc' is not a whole number of pixels in [75, 1024]"),
    ({"backbone": "resnet_v9"}, "backbone 'resnet_v9' is not one of inception_v2, inception_v3"),
    ({"backbone": ["inception_v3"]}, "backbone ['inception_v3'] is not one of"),
    ({"loss": "hinge"}, "loss 'hinge' is not one of sigmoid, softmax"),
    ({"depth_multiplier": "1"}, "depth_multiplier '1' is not a number in (0, 4]"),
    ({"depth_multiplier": float("nan")}, "depth_multiplier nan is not a number in (0, 4]"),
    ({"num_tags": 0}, "num_tags 0 is not a positive whole number"),
    ({"num_tags": 4}, "vocab.txt has 3 tags but train_config.json says num_tags=4"),
]


@pytest.mark.parametrize("change,message", BAD_CONFIG)
def test_a_train_config_that_builds_no_model_is_one_line(tmp_path, change, message):
    """Replays case 7 (locally; a received archive: test_security.py)."""
    config = {"backbone": "inception_v3", "depth_multiplier": 0.5, "num_tags": 3,
              "loss": "sigmoid", "image_size": 139}
    (tmp_path / "train_config.json").write_text(json.dumps(dict(config, **change)))
    (tmp_path / "vocab.txt").write_text("a\nb\nc\n")
    with pytest.raises(train_dir.TrainDirError) as error:
        train_dir.load(str(tmp_path))
    assert message in str(error.value) and "\n" not in str(error.value)
    (tmp_path / "train_config.json").write_text("[3]")
    with pytest.raises(train_dir.TrainDirError, match="lacks backbone, depth_multiplier"):
        train_dir.load(str(tmp_path))


def test_a_bad_train_config_is_one_line_in_the_scripts(model_copy, sample_photos):
    path = os.path.join(model_copy, "train_config.json")
    with open(path, encoding="utf-8") as stream:
        config = json.load(stream)
    with open(path, "w", encoding="utf-8") as stream:
        json.dump(dict(config, image_size=None), stream)
    for script, *args in [("predict.py", f"--model={model_copy}", sample_photos["in_folder"][0]),
                          ("export.py", f"--model={model_copy}", "--export_dir=unused")]:
        line = one_line_error(run_script(script, *args), script)
        assert line == (f"{script}: error: {path}: image_size None is not a whole number of "
                        "pixels in [75, 1024]")
    assert not os.path.exists(os.path.join(REPO, "unused"))


def test_a_damaged_feature_chunk_is_computed_again(tmp_path, caplog, monkeypatch):
    """Replays case 8: a probe features chunk cut short, of garbage or without its labels was a
    traceback on every rerun; it is computed again, with the chunks after it."""
    records = str(tmp_path / "records")
    write_records(records, {"train": 24, "test": 4})
    config = {"backbone": "inception_v3", "depth_multiplier": 0.1, "num_tags": 5,
              "loss": "sigmoid", "image_size": 75}
    backbone = save_random_backbone(str(tmp_path / "backbone" / "model.ckpt"))

    def restore():
        return warm_start.build_restorer(backbone, "")[0]  # features: every layer restored

    def cache():
        return linear_probe.cache_features(str(tmp_path), config, records, "train", 24, restore,
                                           backbone, batch_size=8)

    monkeypatch.setattr(linear_probe, "CHUNK_IMAGES", 8)
    first = cache()
    chunks = sorted(glob.glob(str(tmp_path / "probe" / "features-train-*.npz")))
    assert len(chunks) == 3
    with open(chunks[1], "rb") as stream:
        whole = stream.read()
    for damaged in (whole[:len(whole) // 2], b"garbage" * 100, None):
        with open(chunks[1], "wb") as stream:
            if damaged is None:  # a valid archive without its labels
                np.savez(stream, features=np.zeros((8, 4), np.float16))
            else:
                stream.write(damaged)
        kept = os.path.getmtime(chunks[0])
        with caplog.at_level(logging.WARNING):
            again = cache()
        np.testing.assert_array_equal(again[0], first[0])
        np.testing.assert_array_equal(again[1], first[1])
        assert os.path.getmtime(chunks[0]) == kept
        assert f"{chunks[1]} is damaged" in caplog.text
        caplog.clear()


SAVE_UNDER_A_FILE_SIZE_LIMIT = r"""
import resource, signal, sys
sys.path.insert(0, sys.argv[1])
import cli
import tensorflow.compat.v1 as tf
tf.disable_eager_execution()
tf.get_variable("weights", [1000, 100])
saver = tf.train.Saver()
with tf.Session() as session:
    session.run(tf.global_variables_initializer())
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))
    try:
        saver.save(session, sys.argv[2])
    except tf.errors.OpError as error:
        print(cli.first_line(error))
"""


def test_a_full_disk_is_named_with_tensorflows_reason(tmp_path):
    """Replays case 9: a save that cannot write said `File ".../train.py", line 320` (where the
    op was defined) instead of TensorFlow's reason. A file-size limit stands in for a full disk:
    the same failed write."""
    result = subprocess.run([sys.executable, "-c", SAVE_UNDER_A_FILE_SIZE_LIMIT, REPO,
                             str(tmp_path / "model.ckpt")], capture_output=True, text=True,
                            timeout=300)
    line = result.stdout.strip()
    assert line.startswith(str(tmp_path / "model.ckpt")) and line.endswith("File too large"), (
        result.stdout + result.stderr[-3000:])


def test_all_checkpoints_skips_a_truncated_one_and_writes_the_rest(sample_records, model_copy,
                                                                   tmp_path):
    """Replays case 9's evaluate.py --all_checkpoints over a truncated checkpoint: a traceback
    after scoring, and no metrics_by_step. It is skipped with a warning line."""
    for path in glob.glob(os.path.join(model_copy, "model.ckpt-3.*")):
        shutil.copy(path, path.replace("model.ckpt-3.", "model.ckpt-2."))
    data = glob.glob(os.path.join(model_copy, "model.ckpt-2.data-*"))[0]
    os.truncate(data, os.path.getsize(data) // 2)
    eval_dir = str(tmp_path / "eval")
    result = check_run(run_script("evaluate.py", f"--model={model_copy}", "--all_checkpoints",
                                  f"--eval_dir={eval_dir}"))
    assert (f"{os.path.join(model_copy, 'model.ckpt-2')} is unusable (its data holds "
            in result.stderr) and "skipping it" in result.stderr
    assert sorted(os.listdir(eval_dir)) == ["metrics_by_step.csv", "metrics_by_step.png",
                                            "step-3"]
    with open(os.path.join(eval_dir, "metrics_by_step.csv"), encoding="utf-8") as stream:
        assert [line.split(",")[0] for line in stream.read().splitlines()[1:]] == ["3"]


def test_an_eval_dir_that_is_a_file_is_refused_before_scoring(model_copy, tmp_path):
    """Replays case 10: FileExistsError after all the scoring."""
    eval_file = tmp_path / "results"
    eval_file.write_text("my notes")
    result = run_script("evaluate.py", f"--model={model_copy}", f"--eval_dir={eval_file}")
    assert one_line_error(result, "evaluate.py") == (
        f"evaluate.py: error: --eval_dir {eval_file} is a file, not a folder")
    assert "test:" not in result.stderr  # no scoring progress: checked first
    assert eval_file.read_text() == "my notes"


def test_a_dataset_dir_name_that_is_not_utf8_is_refused_at_once(sample_records, tmp_path):
    """Replays case 10: preprocess.py --dataset_dir=<a non-UTF-8 name> failed with a
    UnicodeEncodeError at the very end, on every rerun."""
    with open(os.path.join(sample_records, "manifest.json"), encoding="utf-8") as stream:
        dataset_dir = json.load(stream)["dataset_dir"]
    strange = os.path.join(os.fsencode(tmp_path), b"caf\xe9")
    shutil.copytree(dataset_dir, os.fsdecode(strange))
    records = str(tmp_path / "records")
    result = subprocess.run([sys.executable, os.path.join(REPO, "preprocess.py").encode(),
                             b"--dataset_dir=" + strange, f"--records_dir={records}".encode()],
                            cwd=REPO, capture_output=True, timeout=300)
    stderr = result.stderr.decode("utf-8", "replace")
    assert result.returncode == 2 and "Traceback" not in stderr, stderr[-3000:]
    assert stderr.strip().splitlines()[-1] == (
        f"preprocess.py: error: --dataset_dir={strange!r} is not a UTF-8 name: rename it, or "
        "give a link to it with a UTF-8 name")
    assert not os.path.exists(records)


def test_an_epoch_count_that_overflows_is_refused_with_the_flags():
    """Replays case 10: train.py --num_epochs=1e300 was an OverflowError in tqdm."""
    outcomes = parse_argvs("train.py", [["train.py", "--num_epochs=1e300"],
                                        ["train.py", "--num_epochs=10000"]])
    assert outcomes[0]["error"] == ("flag --num_epochs=1e+300: --num_epochs must be a finite "
                                    "number in (0, 10000]")
    assert outcomes[1]["ok"]


def test_export_replaces_only_what_export_wrote(model_copy, tmp_path):
    """Replays case 11: export.py --archive=X.tar.gz --overwrite replaced any tar file, e.g. a
    user's backup; a SavedModel folder of something else too."""
    backup = tmp_path / "backup.tar.gz"
    with tarfile.open(backup, "w:gz") as tar:
        tar.add(model_copy, arcname="home/me/train")
    other = tmp_path / "other_model"
    other.mkdir()
    (other / "saved_model.pb").write_bytes(b"someone else's model")
    (other / "notes.txt").write_text("keep")
    before = {path: snapshot(path) if os.path.isdir(path) else open(path, "rb").read()
              for path in (str(backup), str(other))}
    for flag, path, what in (("--archive", backup, "an archive"),
                             ("--export_dir", other, "a SavedModel")):
        result = run_script("export.py", f"--model={model_copy}", f"{flag}={path}",
                            "--overwrite")
        assert one_line_error(result, "export.py") == (
            f"export.py: error: {path} exists and is not {what} of export.py; refusing to "
            f"replace it, choose another {flag}")
    assert before == {path: snapshot(path) if os.path.isdir(path) else open(path, "rb").read()
                      for path in (str(backup), str(other))}
    assert sorted(os.listdir(tmp_path)) == ["backup.tar.gz", "other_model", "train"]
