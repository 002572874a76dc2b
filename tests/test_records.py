"""data/records.py writes TFRecords without TensorFlow: its Examples and their framing must be
the bytes TensorFlow itself writes, or preprocess.py's output would change (or be unreadable)."""
import os

import numpy as np
import pytest

from data import records

# Sizes around the varint boundaries (1, 2, 3 bytes of length) and a photo's size.
PAYLOADS = [0, 1, 127, 128, 16_383, 16_384, 70_000]
# int64s: small, varint boundaries, large, negative (ten bytes in protobuf).
INTS = [0, 1, 127, 128, 300, 16_384, 2**31, 2**40, 2**63 - 1, -1, -(2**63)]


def tensorflow_example(jpeg, height, width, path, line, tag_ids):
    from tensorflow.core.example import example_pb2, feature_pb2

    def _bytes(value):
        return feature_pb2.Feature(bytes_list=feature_pb2.BytesList(value=[value]))

    def _ints(values):
        return feature_pb2.Feature(int64_list=feature_pb2.Int64List(value=list(values)))

    return example_pb2.Example(features=feature_pb2.Features(feature={
        records.ENCODED: _bytes(jpeg), records.FORMAT: _bytes(b"jpeg"),
        records.HEIGHT: _ints([height]), records.WIDTH: _ints([width]),
        records.PATH: _bytes(path.encode("utf-8")), records.LINE: _ints([line]),
        records.TAGS: _ints(tag_ids)})).SerializeToString(deterministic=True)


def test_examples_are_tensorflows_deterministic_serialization():
    rng = np.random.default_rng(0)
    cases = 0
    for size in PAYLOADS:
        for path in ["", "instagram_dataset/sea/image_50.jpg", "여행/café, \"x\".jpg"]:
            for tags in ([], [0], [996, 3, 127, 128], [int(v) for v in INTS]):
                jpeg = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
                line, height, width = (int(rng.choice(INTS)) for _ in range(3))
                args = (jpeg, height, width, path, line, tags)
                assert records.encode_example(*args) == tensorflow_example(*args), args[1:]
                cases += 1
    assert cases == len(PAYLOADS) * 12


def test_framed_records_are_what_tensorflows_writer_writes_and_read_back(tmp_path):
    import tensorflow as tf

    rng = np.random.default_rng(1)
    payloads = [rng.integers(0, 256, size, dtype=np.uint8).tobytes() for size in PAYLOADS]
    ours, theirs = str(tmp_path / "ours.tfrecord"), str(tmp_path / "theirs.tfrecord")
    with open(ours, "wb") as stream:
        for payload in payloads:
            stream.write(records.frame(payload))
    with tf.io.TFRecordWriter(theirs) as writer:
        for payload in payloads:
            writer.write(payload)
    with open(ours, "rb") as a, open(theirs, "rb") as b:
        assert a.read() == b.read()
    assert [record.numpy() for record in tf.data.TFRecordDataset(ours)] == payloads


def test_a_corrupted_byte_is_caught_by_the_checksum(tmp_path):
    import tensorflow as tf

    path = str(tmp_path / "one.tfrecord")
    data = bytearray(records.frame(records.encode_example(b"\xff\xd8" * 500, 2, 3, "a.jpg", 4,
                                                          [5, 6])))
    data[len(data) // 2] ^= 0x01
    with open(path, "wb") as stream:
        stream.write(bytes(data))
    with pytest.raises(tf.errors.DataLossError):
        list(tf.data.TFRecordDataset(path))
    assert os.path.getsize(path) == len(data)
