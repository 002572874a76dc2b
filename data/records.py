"""The TFRecord schema: one tf.train.Example per image, shared by every script.

| key              | type        | value                                                      |
| ---------------- | ----------- | ---------------------------------------------------------- |
| image/encoded    | bytes       | the image, resized and re-encoded as RGB JPEG              |
| image/format     | bytes       | b"jpeg"                                                    |
| image/height     | int64       | height of the encoded image in pixels                      |
| image/width      | int64       | width of the encoded image in pixels                       |
| image/path       | bytes       | path relative to the dataset root, as in data_list.txt     |
| image/line       | int64       | 0-based row of the image in data_list.txt                  |
| image/tags       | int64 list  | tag ids (line numbers of vocab.txt), in tag_list.txt order |
"""
from tensorflow.core.example import example_pb2, feature_pb2

ENCODED = "image/encoded"
FORMAT = "image/format"
HEIGHT = "image/height"
WIDTH = "image/width"
PATH = "image/path"
LINE = "image/line"
TAGS = "image/tags"


def _bytes(value):
    return feature_pb2.Feature(bytes_list=feature_pb2.BytesList(value=[value]))


def _ints(values):
    return feature_pb2.Feature(int64_list=feature_pb2.Int64List(value=list(values)))


def encode_example(jpeg, height, width, path, line, tag_ids):
    """Serialized tf.train.Example for one image (bytes, ready for a TFRecord writer)."""
    example = example_pb2.Example(features=feature_pb2.Features(feature={
        ENCODED: _bytes(jpeg),
        FORMAT: _bytes(b"jpeg"),
        HEIGHT: _ints([height]),
        WIDTH: _ints([width]),
        PATH: _bytes(path.encode("utf-8")),
        LINE: _ints([line]),
        TAGS: _ints(tag_ids),
    }))
    return example.SerializeToString(deterministic=True)


def decode_example(serialized):
    """The fields of a serialized Example as a plain dict (for tests and tools, not the hot path)."""
    feature = example_pb2.Example.FromString(serialized).features.feature
    return {
        "jpeg": feature[ENCODED].bytes_list.value[0],
        "format": feature[FORMAT].bytes_list.value[0].decode("ascii"),
        "height": feature[HEIGHT].int64_list.value[0],
        "width": feature[WIDTH].int64_list.value[0],
        "path": feature[PATH].bytes_list.value[0].decode("utf-8"),
        "line": feature[LINE].int64_list.value[0],
        "tags": list(feature[TAGS].int64_list.value),
    }


def feature_spec():
    """The parsing spec for tf.io.parse_example / parse_single_example (the tf.data pipeline)."""
    import tensorflow as tf
    return {
        ENCODED: tf.io.FixedLenFeature([], tf.string),
        FORMAT: tf.io.FixedLenFeature([], tf.string, default_value="jpeg"),
        HEIGHT: tf.io.FixedLenFeature([], tf.int64),
        WIDTH: tf.io.FixedLenFeature([], tf.int64),
        PATH: tf.io.FixedLenFeature([], tf.string),
        LINE: tf.io.FixedLenFeature([], tf.int64),
        TAGS: tf.io.VarLenFeature(tf.int64),
    }
