"""data/input.py: the eval preprocessing against hand-computed pixels, the eval dataset's order
and completeness, and the training pipeline's shapes, labels and determinism."""
import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from data import input as data_input
from train_records import VOCAB, write_records


@pytest.fixture(scope="module")
def records_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("records")
    return str(directory), write_records(str(directory), {"train": 24, "test": 7})


def png_bytes(array):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def multi_hot(tags):
    row = np.zeros(len(VOCAB), np.float32)
    row[tags] = 1.0
    return row


def test_eval_image_is_central_crop_scaled_to_minus_one_one():
    rng = np.random.default_rng(0)
    array = rng.integers(0, 256, size=(16, 16, 3), dtype=np.uint8)
    # 0.875 of 16 px is 14 px, one pixel off each side; resizing 14 -> 14 keeps the pixels.
    result = data_input.eval_image(tf.constant(png_bytes(array)), 14).numpy()
    expected = (array[1:15, 1:15].astype(np.float32) / 255.0 - 0.5) * 2.0
    assert result.shape == (14, 14, 3) and result.dtype == np.float32
    np.testing.assert_allclose(result, expected, atol=1e-6)


def test_eval_image_resizes_any_shape_and_grey_jpeg_to_three_channels():
    grey = np.full((30, 50), 255, np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(grey, mode="L").save(buffer, format="JPEG")
    result = data_input.eval_image(tf.constant(buffer.getvalue()), 21).numpy()
    assert result.shape == (21, 21, 3)
    np.testing.assert_allclose(result, 1.0, atol=0.02)


def test_eval_dataset_yields_every_record_once_in_file_order(records_dir):
    directory, written = records_dir
    batches = list(data_input.eval_dataset(directory, "test", 32, 3, len(VOCAB)))
    assert [len(b["path"]) for b in batches] == [3, 3, 1]  # last partial batch kept
    paths = [p.decode() for b in batches for p in b["path"].numpy()]
    assert paths == [path for path, _ in written["test"]]
    labels = np.concatenate([b["labels"].numpy() for b in batches])
    np.testing.assert_array_equal(labels, [multi_hot(tags) for _, tags in written["test"]])
    images = np.concatenate([b["images"].numpy() for b in batches])
    assert images.shape == (7, 32, 32, 3) and images.min() >= -1 and images.max() <= 1


def test_train_dataset_batches_are_augmented_labelled_and_deterministic(records_dir):
    directory, written = records_dir
    known = {tuple(multi_hot(tags)) for _, tags in written["train"]}

    def first_batches(seed):
        dataset = data_input.train_dataset(directory, 40, 5, len(VOCAB), seed=seed,
                                           shuffle_buffer=8)
        return [(i.numpy(), l.numpy()) for i, l in dataset.take(6)]  # 30 > 24: it repeats

    batches = first_batches(seed=3)
    for images, labels in batches:
        assert images.shape == (5, 40, 40, 3) and images.dtype == np.float32
        assert images.min() >= -1.0 and images.max() <= 1.0
        assert labels.shape == (5, len(VOCAB))
        assert all(tuple(row) in known for row in labels)
    again = first_batches(seed=3)
    for (a, _), (b, _) in zip(batches, again):
        np.testing.assert_array_equal(a, b)
    other = first_batches(seed=4)
    assert not all(np.array_equal(a, b) for (a, _), (b, _) in zip(batches, other))


def test_missing_split_is_a_one_line_input_error(tmp_path):
    with pytest.raises(data_input.InputError, match="no 'train' TFRecords"):
        data_input.shard_files(str(tmp_path), "train")
