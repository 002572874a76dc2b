"""The built-in sample (data/sample.py) and `preprocess.py --sample` end to end."""
import filecmp
import hashlib
import io
import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import REPO
from data import harrison, sample
from test_preprocess import (leave_free, litter, run_killed_before_replace, run_patched,
                             run_preprocess, small_disk)  # noqa: F401 (a fixture)


def test_sample_is_deterministic_and_in_harrison_format(tmp_path):
    first, second = str(tmp_path / "a"), str(tmp_path / "b")
    sample.write_sample(first, num_images=40)
    sample.write_sample(second, num_images=40)
    names = ["data_list.txt", "tag_list.txt", "vocab_index.txt"]
    paths, tag_lines = harrison.read_lists(first)
    names += paths
    assert filecmp.cmpfiles(first, second, names, shallow=False)[0] == names  # byte-identical
    with open(os.path.join(first, "tag_list.txt"), encoding="utf-8") as handle:
        assert all(line.endswith(" \n") for line in handle)  # HARRISON's trailing space
    vocab = harrison.read_vocab_index(os.path.join(first, "vocab_index.txt"))
    counts = {tag: sum(tag in harrison.parse_tags(line) for line in tag_lines) for tag in vocab}
    assert [counts[tag] for tag in vocab] == sorted(counts.values(), reverse=True)
    for path, line in zip(paths, tag_lines):
        tags = harrison.parse_tags(line)
        assert path.startswith(f"instagram_dataset/{tags[0]}/image_")  # folder = seed hashtag
        assert tags[0] in sample.SCENES and len(tags) >= 1
        with Image.open(os.path.join(first, path)) as image:
            assert image.format == "JPEG"
            assert (image.mode == "L") == ("blackandwhite" in tags)


@pytest.fixture(scope="module")
def sample_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("sample")
    output_dir = str(base / "records")
    result = run_preprocess("--sample", f"--sample_dir={base / 'sample'}",
                            f"--records_dir={output_dir}", timeout=300)
    assert result.returncode == 0, result.stderr
    return output_dir, str(base / "sample" / "HARRISON")


def test_sample_end_to_end(sample_run):
    output_dir, dataset_dir = sample_run
    manifest = harrison.load_manifest(output_dir)
    assert manifest["image_size"] == 159 and manifest["skipped"] == []
    assert manifest["splits"]["test"]["images"] == 120  # 20% of 600
    # The default val split: a tenth of the 480 left after the test split.
    assert manifest["splits"]["val"]["images"] == 48
    assert manifest["splits"]["train"]["images"] == 432
    assert len(manifest["splits"]["train"]["shards"]) == 4
    vocab = harrison.load_records_vocab(output_dir)
    assert vocab == harrison.read_vocab_index(os.path.join(dataset_dir, "vocab_index.txt"))
    assert vocab[0] == "love"  # a social tag is the most popular: the baseline's best guess
    assert manifest["vocab_size"] == len(vocab) > 25


# sha256 of the sample's outputs made before the other sources and the vocabulary rules existed
# (commit 4f88720). The JPEG bytes are left out (another Pillow build may encode them
# differently), the rest is pinned: which image went into which shard with which tags.
BEFORE_OTHER_SOURCES = {
    "vocab.txt": "e64fb1a1bb2b4b1e4934847adad98a27ce18fb5355ca3cd06bdce5fd28bc0be9",
    "split.csv": "bd56a8d6975ec216ca10025b69863fdaf363453b455cbc08ed704b14e165ba88",
    "tag_stats.csv": "cf257b9914254fb4f0a642dc9b86eda4b99967898135155d06f95f19e75ffc03",
    "manifest.json without dataset_dir":
        "18c8884ca01232bc3401fed60ed215719c201f6e63dda427eaebc78c3b3ce964",
    "records without image bytes":
        "5852e7f27d3550d029ac100b317c2537192b6d5e411c0c3789e9b1cdbdfc8771",
}


def test_the_sample_gives_the_same_output_as_before_the_other_sources(sample_run):
    import json

    import tensorflow as tf
    from data import pipeline, records

    output_dir, _ = sample_run
    found = {name: hashlib.sha256(open(os.path.join(output_dir, name), "rb").read()).hexdigest()
             for name in ("vocab.txt", "split.csv", "tag_stats.csv")}
    manifest = harrison.load_manifest(output_dir)
    manifest.pop("dataset_dir")
    manifest["settings"].pop("dataset_dir")
    found["manifest.json without dataset_dir"] = hashlib.sha256(
        json.dumps(manifest, sort_keys=True).encode()).hexdigest()
    digest = hashlib.sha256()
    for split in ("train", "val", "test"):
        for shard in pipeline.shard_files(output_dir, split):
            for raw in tf.data.TFRecordDataset(shard).as_numpy_iterator():
                record = records.decode_example(raw)
                digest.update(repr((os.path.basename(shard), record["path"], record["line"],
                                    list(record["tags"]), record["height"],
                                    record["width"])).encode())
    found["records without image bytes"] = digest.hexdigest()
    assert found == BEFORE_OTHER_SOURCES

def _features_and_labels(output_dir, split, num_tags):
    import tensorflow as tf
    from data import records
    manifest = harrison.load_manifest(output_dir)
    features, labels = [], []
    for shard in manifest["splits"][split]["shards"]:
        for raw in tf.data.TFRecordDataset(os.path.join(output_dir, shard)):
            record = records.decode_example(raw.numpy())
            image = Image.open(io.BytesIO(record["jpeg"])).convert("RGB").resize((4, 4), Image.BOX)
            features.append(np.asarray(image, dtype=np.float32).ravel() / 255.0)
            labels.append(np.bincount(record["tags"], minlength=num_tags) > 0)
    return np.array(features), np.array(labels, dtype=np.float32)


def test_sample_tags_are_learnable_from_pixels_only(sample_run):
    """A model that looks at pixels beats the most-popular-tags baseline by a wide margin."""
    output_dir, _ = sample_run
    vocab = harrison.load_records_vocab(output_dir)
    train_x, train_y = _features_and_labels(output_dir, "train", len(vocab))
    test_x, test_y = _features_and_labels(output_dir, "test", len(vocab))
    distances = ((test_x[:, None, :] - train_x[None, :, :]) ** 2).sum(-1)
    neighbours = np.argsort(distances, axis=1)[:, :7]
    scores = train_y[neighbours].mean(axis=1)  # 7-nearest-neighbour tag frequencies
    popular = np.tile(train_y.mean(axis=0), (len(test_y), 1))

    def precision_at(k, score):
        top = np.argsort(-score, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(test_y, top, axis=1).mean()

    assert precision_at(1, scores) > precision_at(1, popular) + 0.25
    assert precision_at(3, scores) > precision_at(3, popular) + 0.1
    # Social tags carry no pixel signal: the neighbours predict "love" no better than its base rate.
    love = vocab.index("love")
    predicted = scores[:, love] > 0.5
    if predicted.any():
        assert abs(test_y[predicted, love].mean() - train_y[:, love].mean()) < 0.2


def test_sample_defaults_yield_to_explicit_flags():
    # In a subprocess: absl's FLAGS are process-global, and other tests import train.py, whose
    # flags share names with preprocess.py's.
    check = """
import preprocess
preprocess.FLAGS(["preprocess.py", "--sample", "--shorter_side=96"])
assert preprocess._setting("shorter_side") == 96  # given: kept
assert preprocess._setting("test_size") == 120  # not given: 20% of the sample
assert preprocess._setting("shard_size") == 128
preprocess.FLAGS.unparse_flags()
preprocess.FLAGS(["preprocess.py", "--dataset_dir=x"])
assert preprocess._setting("shorter_side") == 342 and preprocess._setting("test_size") == 5000
"""
    result = subprocess.run([sys.executable, "-c", check], cwd=REPO, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


# SIGKILL to the whole run right after the new sample was swapped in, before the old one beside
# it is removed (see KILL_BEFORE_REPLACE).
KILL_AFTER_SWAP = r"""
import signal
from data import atomic
assert os.getpgid(0) == os.getpid()
_exchange = atomic._exchange
def _exchange_and_die(first, second):
    _exchange(first, second)
    os.killpg(0, signal.SIGKILL)
atomic._exchange = _exchange_and_die
"""


def tree(root):
    """{relative path: sha256} of every file below root."""
    return {os.path.relpath(os.path.join(folder, name), root):
            hashlib.sha256(open(os.path.join(folder, name), "rb").read()).hexdigest()
            for folder, _, names in os.walk(root) for name in names}


def test_sample_runs_killed_at_chosen_moments_then_a_rerun(tmp_path):
    sample_dir, records_dir = str(tmp_path / "sample"), str(tmp_path / "records")

    def args(images, *extra):
        return ["--sample", f"--sample_dir={sample_dir}", f"--records_dir={records_dir}",
                f"--sample_images={images}", "--shorter_side=64", *extra]

    # The uninterrupted run, kept aside (the manifest names the sample's path: same paths).
    assert run_preprocess(*args(30)).returncode == 0
    expected = {"sample": tree(sample_dir), "records": tree(records_dir)}
    shutil.rmtree(sample_dir)
    shutil.rmtree(records_dir)
    # A new sample complete but not yet in place; then one in place, killed as it starts on the
    # records: the first run's sample folder goes.
    run_killed_before_replace("HARRISON", *args(20))
    assert [name[:len(".tmp-HARRISON-")] for name in litter(sample_dir)] == [".tmp-HARRISON-"]
    assert not os.path.exists(os.path.join(sample_dir, "HARRISON"))
    run_killed_before_replace(".preprocess-run.json", *args(20))
    assert litter(sample_dir) == [] and os.listdir(sample_dir) == ["HARRISON"]
    assert [name[:len(".tmp-.preprocess-run.json-")] for name in litter(records_dir)] == [
        ".tmp-.preprocess-run.json-"]
    # Another sample size: killed with the new sample swapped in, the old one still beside it.
    result = run_patched(KILL_AFTER_SWAP, *args(30, "--overwrite"))
    assert result.returncode == -signal.SIGKILL, result.stderr[-3000:]
    assert len(litter(sample_dir)) == 1
    result = run_preprocess(*args(30, "--overwrite"))
    assert result.returncode == 0, result.stderr
    assert litter(sample_dir) == [] and litter(records_dir) == []
    assert {"sample": tree(sample_dir), "records": tree(records_dir)} == expected


def test_full_disk_while_drawing_the_sample_is_one_line(small_disk):
    sample_dir = os.path.join(small_disk, "sample")
    leave_free(small_disk, 4)
    result = run_preprocess("--sample", f"--sample_dir={sample_dir}", "--sample_images=40",
                            f"--records_dir={os.path.join(small_disk, 'records')}")
    assert result.returncode == 2
    assert result.stderr.strip() == ("preprocess.py: error: cannot write the sample dataset to "
                                     f"{sample_dir}: No space left on device")
    assert os.listdir(sample_dir) == []  # the unfinished sample is removed
