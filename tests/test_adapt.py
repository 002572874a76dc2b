"""Adapting a trained model to other hashtags (issue 19): train.py --warm_start=<a train_dir or a
model archive> on records of another vocabulary restores the backbone, fits the head to the new
vocabulary by the linear probe, then fine-tunes.

The trained model is conftest's `learned_sample` (the built-in sample's 37 tags); the new
records are data/caption_sample.py's captioned posts (22 tags, 9 of them the sample's), split
into 172 train, 60 val and 60 test photos."""
import os
import re
import shutil
import subprocess

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from conftest import (assert_one_line_error, check_run, checkpoint_steps, run_script,
                      start_script)
from data import caption_sample, harrison
from nets import model, restoring, train_dir, warm_start
from test_recipe import save_random_backbone, val_lines

# The LP-FT recipe of tests/test_recipe.py, cut to 10 fine-tuning steps: on 172 photos the probe
# does most of the work, and the kept model is the best on val of the probe and step 10.
ADAPT_FLAGS = ["--learning_rate=0.002", "--warmup_steps=5", "--max_steps=10",
               "--save_every_steps=10", "--probe_epochs=40"]
MAIN_HEAD = model.get_backbone("inception_v3").heads[0]


def model_flags(config):
    """train.py flags for the model `config` (a train_config.json) describes."""
    return ["--preset=cpu", f"--depth_multiplier={config['depth_multiplier']}",
            f"--image_size={config['image_size']}", f"--batch_size={config['batch_size']}"]


@pytest.fixture(scope="module")
def captions(learned_sample, tmp_path_factory):
    """The caption sample's records, stored at the learned model's image size; and the same
    without a val split ("records_no_val": a run that needs no validation builds no graph for
    it)."""
    root = tmp_path_factory.mktemp("adapt")
    table = caption_sample.ensure_caption_sample(str(root))
    config, vocab = train_dir.load(learned_sample["train_dir"])
    records = {}
    for name, val_size in (("records", 60), ("records_no_val", 0)):
        records[name] = str(root / name)
        check_run(run_script("preprocess.py", f"--table={table}", f"--records_dir={records[name]}",
                             f"--shorter_side={round(config['image_size'] / 0.875)}",
                             f"--val_size={val_size}", "--test_size=60", "--workers=2"))
    return {"root": root, "records_dir": records["records"], "flags": model_flags(config),
            "records_no_val": records["records_no_val"], "config": config, "old_vocab": vocab,
            "vocab": harrison.load_records_vocab(records["records"])}


def start_train(captions, name, start_from, *extra, records_dir=None):
    """train.py into <root>/<name>, warm-started from `start_from`, running on in a child."""
    return start_script("train.py", *captions["flags"], *ADAPT_FLAGS, *extra,
                        f"--records_dir={records_dir or captions['records_dir']}",
                        f"--train_dir={captions['root'] / name}", f"--warm_start={start_from}")


@pytest.fixture(scope="module")
def runs(learned_sample, captions):
    """{name: {train_dir, result, val}} of train.py adapting the learned model ("adapted"), and
    the same run, cut to one step of the main head's last layer alone (cheap to build: no
    gradients through the backbone, which stays as restored), warm-started from a random backbone
    ("scratch": its probe is what counts) and from the learned model's archive ("archive", no
    probe, no val split). They run side by side, the archive's export too: most of a short run
    is building graphs, one core's work."""
    root = captions["root"]
    one_step = ["--max_steps=1", f"--trainable_scopes={MAIN_HEAD}", "--nochoose_variant"]
    children = {"adapted": start_train(captions, "adapted", learned_sample["train_dir"])}
    scratch = save_random_backbone(str(root / "random" / "model.ckpt"),
                                   depth_multiplier=captions["config"]["depth_multiplier"])
    children["scratch"] = start_train(captions, "scratch", scratch, *one_step)
    archive, export_dir = str(root / "hashtags.tar.gz"), str(root / "export")
    check_run(run_script("export.py", f"--model={learned_sample['train_dir']}",
                         f"--archive={archive}", f"--export_dir={export_dir}"))
    children["archive"] = start_train(captions, "archive", archive, *one_step,
                                      "--probe_epochs=0",
                                      records_dir=captions["records_no_val"])
    finished = {}
    for name, child in children.items():
        stdout, stderr = child.communicate(timeout=600)
        finished[name] = subprocess.CompletedProcess(name, child.returncode, stdout, stderr)
    return {name: {"train_dir": str(root / name), "result": check_run(result),
                   "val": val_lines(result.stdout), "warm_start": archive,
                   "export_dir": export_dir}
            for name, result in finished.items()}


def restored_count(stdout):
    """(variables restored, auxiliary-head variables left initialized) of train.py's log."""
    line = next(line for line in stdout.splitlines() if re.match(r"warm start from .*: restored",
                                                                 line))
    aux = re.search(r"and (\d+) of the auxiliary head", line)
    return int(re.search(r"restored (\d+) variables", line).group(1)), int(aux.group(1) if aux
                                                                           else 0)


def test_the_adapted_model_beats_popularity_and_a_probe_on_a_from_scratch_backbone(
        learned_sample, captions, runs):
    adapted, from_scratch = runs["adapted"], runs["scratch"]["val"][0, "linear probe"]
    # The log says what was restored (the best val checkpoint, as evaluate.py would use) and
    # what is new.
    best_learned = train_dir.best(learned_sample["train_dir"])
    assert (f"using model.ckpt-{best_learned['step']}, the best checkpoint on the val split"
            in adapted["result"].stderr)
    shared = len(set(captions["vocab"]) & set(captions["old_vocab"]))
    assert 0 < shared < len(captions["vocab"])
    assert (f"trained on a vocabulary of {len(captions['old_vocab'])} tags; new: the head for "
            f"the records' {len(captions['vocab'])} tags, {shared} of them also in that "
            "vocabulary") in adapted["result"].stdout
    # The kept model (best.json's, which evaluate.py and predict.py use) against the popularity
    # baseline and a probe on a from-scratch (randomly initialized) backbone, on val.
    best = train_dir.best(adapted["train_dir"])
    kept = adapted["val"][best["step"], "linear probe" if best["step"] == 0 else "model"]
    assert kept["map"][0] == pytest.approx(100 * best["value"], abs=0.01)
    for metric in ("map", "precision@1"):
        model_value, popularity = kept[metric]
        assert model_value > popularity + 10, (metric, kept)
        assert model_value > from_scratch[metric][0] + 10, (metric, kept, from_scratch)


def test_a_model_archive_warm_starts_the_same_backbone(learned_sample, captions, runs):
    adapted, result = runs["adapted"], runs["archive"]["result"]
    assert (f"warm start from {runs['archive']['warm_start']}: its inception_v3 "
            f"x{captions['config']['depth_multiplier']} backbone" in result.stdout)
    # An export holds the inference graph's variables: the auxiliary head, absent, starts at
    # random; every other variable the train_dir gives is restored, bit for bit (the run trained
    # the main head alone: the rest, batch-norm statistics included, is as restored).
    restored, aux = restored_count(result.stdout)
    assert aux > 0 and restored + aux == restored_count(adapted["result"].stdout)[0]
    source = tf.train.load_checkpoint(
        train_dir.default_checkpoint(learned_sample["train_dir"])[0])
    started = tf.train.load_checkpoint(train_dir.latest_checkpoint(runs["archive"]["train_dir"]))
    not_restored = (*model.get_backbone("inception_v3").heads, model.aux_scope("inception_v3"))
    names = [name for name in source.get_variable_to_shape_map()
             if name.startswith("InceptionV3/") and not name.startswith(not_restored)
             and "/RMSProp" not in name and not name.endswith(restoring.AVERAGE_SUFFIX)]
    assert len(names) == restored
    # The export holds the weights of the variant chosen on val: raw, or their moving average.
    suffix = (restoring.AVERAGE_SUFFIX
              if train_dir.best(learned_sample["train_dir"])["variant"]["weights"] == "averaged"
              else "")
    for name in names:
        np.testing.assert_array_equal(source.get_tensor(name + suffix), started.get_tensor(name),
                                      name)


def test_a_model_of_another_depth_is_a_one_line_error(learned_sample, captions, tmp_path):
    config = captions["config"]
    other = 0.5 if config["depth_multiplier"] != 0.5 else 0.25
    result = run_script("train.py", *captions["flags"], f"--depth_multiplier={other}",
                        f"--records_dir={captions['records_dir']}",
                        f"--train_dir={tmp_path / 'train'}",
                        f"--warm_start={learned_sample['train_dir']}")
    assert_one_line_error(result, "train.py", f"--depth_multiplier={config['depth_multiplier']}",
                          f"holds a inception_v3 x{config['depth_multiplier']} model")
    assert not checkpoint_steps(str(tmp_path / "train"))


def test_a_train_dir_warm_starts_from_its_best_checkpoint_on_val(learned_sample, captions,
                                                                  tmp_path):
    # As evaluate.py and predict.py would use it, not its newest.
    copy = str(tmp_path / "train")
    shutil.copytree(learned_sample["train_dir"], copy)
    steps = checkpoint_steps(copy)
    assert len(steps) > 1
    train_dir.record_best(copy, steps[0], "map", 0.5)
    with warm_start.open_source(copy, captions["config"]) as source:
        assert source.checkpoint == train_dir.checkpoint_prefix(copy, steps[0])
        assert source.vocab == captions["old_vocab"]


def test_an_export_folder_is_read_as_its_archive(learned_sample, captions, runs):
    # export.py's SavedModel folder: its variables, where they are, and its vocabulary.
    export_dir = runs["archive"]["export_dir"]
    with warm_start.open_source(export_dir, captions["config"]) as source:
        assert source.checkpoint == os.path.join(export_dir, "variables", "variables")
        assert source.vocab == captions["old_vocab"]
        assert warm_start.describe_source(source, captions["vocab"]).startswith(
            f"warm start from {export_dir}: its inception_v3")
        exported = tf.train.load_checkpoint(source.checkpoint)
        trained = tf.train.load_checkpoint(
            train_dir.default_checkpoint(learned_sample["train_dir"])[0])
        for name in exported.get_variable_to_shape_map():
            np.testing.assert_array_equal(exported.get_tensor(name), trained.get_tensor(name))


def test_the_adapted_train_dir_is_the_records_own(learned_sample, captions, runs):
    # Its vocabulary is the records', not the warm start's: the same command finds it trained
    # (the resume checks pass) and reads no warm start again.
    adapted = runs["adapted"]["train_dir"]
    config, vocab = train_dir.load(adapted)
    assert vocab == captions["vocab"] and config["warm_start"] == learned_sample["train_dir"]
    again = start_train(captions, "adapted", learned_sample["train_dir"])
    stdout, stderr = again.communicate(timeout=600)
    assert again.returncode == 0, stderr[-3000:]
    assert f"{adapted} is already trained to step 10" in stdout and "warm start" not in stdout
