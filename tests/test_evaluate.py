"""evaluate.py end to end, run as users run it (subprocesses).

Two models: conftest's tiny `trained_dir` (3 steps on the 40-image sample, shared with the
predict tests) for the files, the partial batch and the errors; and `learned`, a --preset=cpu
model trained long enough on the 600-image sample to learn its scene tags, for the claim that
matters: the model beats the popularity baseline. `learned` is the slow part of this file.
"""
import csv
import json
import os
import shutil

import pytest

from conftest import assert_one_line_error, check_run, run_script

# conftest's learned_sample: --preset=cpu, 60 steps, checkpoints at 30 and 60. Measured on the
# sample's 120 test images, where popularity (always "love", a social tag drawn independently of
# the picture) has P@1 0.417: P@1 0.34 at step 30, 0.74 at step 60.
LEARNED_STEPS = (30, 60)
LEARNED_BATCH = 32  # 120 test images: 3 full batches and a partial one of 24
TINY_BATCH = 3      # the tiny sample's 8 test images: 2 full batches and a partial one of 2
EXPECTED_METRICS = {f"{name}@{k}" for name in ("precision", "recall", "accuracy", "f1",
                                               "micro_recall") for k in (1, 3, 5, 10)}
EXPECTED_METRICS |= {"map", "label_map"}


def read_json(path):
    with open(path, encoding="utf-8") as stream:
        return json.load(stream)


def read_csv(path):
    with open(path, encoding="utf-8", newline="") as stream:
        return list(csv.DictReader(stream))


def split_paths(records_dir, split):
    return sorted(row["path"] for row in read_csv(os.path.join(records_dir, "split.csv"))
                  if row["split"] == split)


@pytest.fixture(scope="session")
def learned(learned_sample, tmp_path_factory):
    """evaluate.py --all_checkpoints on conftest's model trained on the 600-image sample."""
    eval_dir = str(tmp_path_factory.mktemp("learned_eval"))
    records_dir, train_dir = learned_sample["records_dir"], learned_sample["train_dir"]
    result = check_run(run_script("evaluate.py", f"--records_dir={records_dir}",
                                  f"--model={train_dir}", "--all_checkpoints",
                                  f"--batch_size={LEARNED_BATCH}", f"--eval_dir={eval_dir}"))
    return {"records_dir": records_dir, "train_dir": train_dir, "eval_dir": eval_dir,
            "stdout": result.stdout}


@pytest.fixture(scope="module")
def tiny_eval(sample_records, trained_dir, tmp_path_factory):
    """evaluate.py on conftest's tiny model, latest checkpoint, default settings but the batch."""
    eval_dir = str(tmp_path_factory.mktemp("tiny_eval"))
    result = check_run(run_script("evaluate.py", f"--records_dir={sample_records}",
                                  f"--model={trained_dir}",
                                  f"--batch_size={TINY_BATCH}", f"--eval_dir={eval_dir}"))
    return eval_dir, result.stdout


def test_model_trained_on_the_sample_beats_the_popularity_baseline(learned):
    last = os.path.join(learned["eval_dir"], f"step-{LEARNED_STEPS[-1]}")
    document = read_json(os.path.join(last, "metrics.json"))
    model, popularity = document["model"], document["popularity"]
    assert model["precision@1"] > popularity["precision@1"] + 0.1, (model, popularity)
    # The printed table: model, popularity and the paper's VGG-Object+Scene side by side.
    row = [line for line in learned["stdout"].splitlines()
           if line.split()[:1] == ["precision@1"]][-1]
    assert row.split() == ["precision@1", f"{100 * model['precision@1']:.2f}",
                           f"{100 * popularity['precision@1']:.2f}", "30.16"]
    # Every test image scored once, the last partial batch included.
    expected = split_paths(learned["records_dir"], "test")
    assert len(expected) % LEARNED_BATCH != 0
    assert document["num_images"] == len(expected)
    assert sorted(row["path"] for row in read_csv(os.path.join(last, "predictions.csv"))) \
        == expected


def test_all_checkpoints_writes_one_folder_per_step_and_the_curve(learned):
    eval_dir = learned["eval_dir"]
    rows = read_csv(os.path.join(eval_dir, "metrics_by_step.csv"))
    assert [int(row["global_step"]) for row in rows] == list(LEARNED_STEPS)
    for step, row in zip(LEARNED_STEPS, rows):
        document = read_json(os.path.join(eval_dir, f"step-{step}", "metrics.json"))
        assert document["global_step"] == step
        assert document["checkpoint"] == os.path.join(learned["train_dir"], f"model.ckpt-{step}")
        assert float(row["precision@1"]) == pytest.approx(document["model"]["precision@1"],
                                                          abs=1e-6)
        assert float(row["popularity/precision@1"]) == pytest.approx(
            document["popularity"]["precision@1"], abs=1e-6)
    from PIL import Image
    assert Image.open(os.path.join(eval_dir, "metrics_by_step.png")).format == "PNG"


def test_every_image_is_scored_once_including_the_last_partial_batch(sample_records, tiny_eval):
    eval_dir, _ = tiny_eval
    expected = split_paths(sample_records, "test")
    assert len(expected) % TINY_BATCH != 0
    assert read_json(os.path.join(eval_dir, "metrics.json"))["num_images"] == len(expected)
    rows = read_csv(os.path.join(eval_dir, "predictions.csv"))
    assert sorted(row["path"] for row in rows) == expected
    assert all(row["true_tags"] and row["predicted_10"] for row in rows)


def test_metrics_json_keys_and_fractions(trained_dir, tiny_eval):
    eval_dir, _ = tiny_eval
    document = read_json(os.path.join(eval_dir, "metrics.json"))
    assert set(document) == {"checkpoint", "global_step", "split", "num_images", "variant",
                             "model", "popularity"}
    # The demo's model has no val split, so no variant was chosen: the model as trained.
    assert document["variant"] == {"weights": "raw", "image_size": 75, "mirror": False}
    with open(os.path.join(trained_dir, "checkpoint"), encoding="utf-8") as stream:
        latest = stream.readline().split('"')[1]
    assert os.path.basename(document["checkpoint"]) == os.path.basename(latest)
    assert document["global_step"] == int(latest.rsplit("-", 1)[1])
    assert document["split"] == "test"
    for results in (document["model"], document["popularity"]):
        assert set(results) == EXPECTED_METRICS
        assert all(0.0 <= value <= 1.0 for value in results.values())


def test_per_tag_csv_and_contact_sheet(sample_records, tiny_eval):
    eval_dir, _ = tiny_eval
    with open(os.path.join(sample_records, "vocab.txt"), encoding="utf-8") as stream:
        vocab = stream.read().split("\n")[:-1]
    rows = read_csv(os.path.join(eval_dir, "per_tag.csv"))
    assert [row["tag"] for row in rows] == vocab
    predictions = read_csv(os.path.join(eval_dir, "predictions.csv"))
    # support = test images carrying the tag, as in predictions.csv's true tags.
    for row in rows:
        assert int(row["support"]) == sum(row["tag"] in p["true_tags"].split()
                                          for p in predictions)
    from PIL import Image
    sheet = Image.open(os.path.join(eval_dir, "contact_sheet.png"))
    assert sheet.format == "PNG" and sheet.width >= 600


def test_clear_error_without_a_checkpoint(sample_records, tmp_path):
    # A fresh interpreter: evaluate.py's one real start on this exit path (conftest.run_script).
    assert_one_line_error(run_script("evaluate.py", f"--records_dir={sample_records}",
                                     f"--model={tmp_path}", fresh=True),
                          "evaluate.py", f"no checkpoint in {tmp_path}")


def test_clear_error_when_the_records_vocabulary_differs(sample_records, trained_dir, tmp_path):
    other = str(tmp_path / "records")
    shutil.copytree(sample_records, other)
    vocab_path = os.path.join(other, "vocab.txt")
    with open(vocab_path, encoding="utf-8") as stream:
        vocab = stream.read().split("\n")[:-1]
    with open(vocab_path, "w", encoding="utf-8") as stream:
        stream.write("".join(tag + "\n" for tag in [vocab[1], vocab[0]] + vocab[2:]))
    assert_one_line_error(run_script("evaluate.py", f"--records_dir={other}",
                                     f"--model={trained_dir}"),
                          "evaluate.py", "vocabulary", f"tag id 0 is {vocab[1]!r} vs {vocab[0]!r}")


def test_clear_error_on_a_split_without_images(sample_records, trained_dir, tmp_path):
    # preprocess.py writes no shard for a split it did not make (here: no --val_size).
    assert_one_line_error(run_script("evaluate.py", f"--records_dir={sample_records}",
                                     f"--model={trained_dir}", "--split=val"),
                          "evaluate.py", "no 'val' TFRecords")
    # Shards that hold no record: the scorer finds nothing to score.
    from evaluation import scoring
    from nets import train_dir
    other = str(tmp_path / "records")
    shutil.copytree(sample_records, other)
    for name in os.listdir(other):
        if name.startswith("test-"):
            open(os.path.join(other, name), "wb").close()
    config, _ = train_dir.load(trained_dir)
    checkpoint, _ = train_dir.resolve(trained_dir)
    scorer = scoring.Scorer(config, other, "test", batch_size=TINY_BATCH)
    try:
        with pytest.raises(scoring.EvaluationError, match="'test' split of .* has no images"):
            scorer.score(checkpoint)
    finally:
        scorer.close()


def test_popularity_counts_come_from_tag_stats_or_else_from_the_train_records(sample_records,
                                                                               tmp_path):
    from data import harrison, pipeline
    vocab = harrison.load_records_vocab(sample_records)
    from_stats = pipeline.tag_counts(sample_records, vocab)
    other = str(tmp_path / "records")
    shutil.copytree(sample_records, other)
    os.remove(os.path.join(other, "tag_stats.csv"))
    from_records = pipeline.tag_counts(other, vocab)
    assert from_records.tolist() == from_stats.tolist()
    train_images = read_json(os.path.join(sample_records, "manifest.json"))["splits"]["train"]
    assert 0 < from_stats.max() <= train_images["images"]


def test_all_checkpoints_of_a_train_dir_copied_elsewhere(trained_dir, tmp_path):
    # The `checkpoint` file keeps the paths of the machine that trained (e.g. Colab before a
    # copy to Drive): the checkpoints are found by their files inside the copy.
    from nets import train_dir
    copy = str(tmp_path / "train")
    shutil.copytree(trained_dir, copy)
    names = sorted(name[:-len(".index")] for name in os.listdir(copy) if name.endswith(".index"))
    stale = [f"/content/gone/train/{name}" for name in names]
    with open(os.path.join(copy, "checkpoint"), "w", encoding="utf-8") as stream:
        stream.write(f'model_checkpoint_path: "{stale[-1]}"\n')
        stream.writelines(f'all_model_checkpoint_paths: "{path}"\n' for path in stale)
    found = train_dir.list_checkpoints(copy)
    assert sorted(prefix for _, prefix in found) == [os.path.join(copy, name) for name in names]
    steps = [step for step, _ in found]
    assert steps == sorted(steps)
    assert steps == [train_dir.checkpoint_step(prefix) for _, prefix in found]
