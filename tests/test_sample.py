"""The built-in sample (data/sample.py) and `preprocess.py --sample` end to end."""
import filecmp
import io
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from data import harrison, sample

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "preprocess.py"), "--sample",
         f"--sample_dir={base / 'sample'}", f"--output_dir={output_dir}"],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return output_dir, str(base / "sample" / "HARRISON")


def test_sample_end_to_end(sample_run):
    output_dir, dataset_dir = sample_run
    manifest = harrison.load_manifest(output_dir)
    assert manifest["image_size"] == 160 and manifest["skipped"] == []
    assert manifest["splits"]["test"]["images"] == 120  # 20% of 600
    assert manifest["splits"]["train"]["images"] == 480
    assert len(manifest["splits"]["train"]["shards"]) == 4
    vocab = harrison.load_records_vocab(output_dir)
    assert vocab == harrison.read_vocab_index(os.path.join(dataset_dir, "vocab_index.txt"))
    assert vocab[0] == "love"  # a social tag is the most popular: the baseline's best guess
    assert manifest["vocab_size"] == len(vocab) > 25


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
preprocess.FLAGS(["preprocess.py", "--sample", "--image_size=96"])
assert preprocess._setting("image_size") == 96  # given: kept
assert preprocess._setting("test_size") == 120  # not given: 20% of the sample
assert preprocess._setting("shard_size") == 128
preprocess.FLAGS.unparse_flags()
preprocess.FLAGS(["preprocess.py", "--dataset_dir=x"])
assert preprocess._setting("image_size") == 299 and preprocess._setting("test_size") == 5000
"""
    result = subprocess.run([sys.executable, "-c", check], cwd=REPO, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
