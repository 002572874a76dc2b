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

Writing needs no TensorFlow: `encode_example` serializes the Example in protobuf's wire format
itself (the bytes of TensorFlow's deterministic serialization, checked by the tests) and
`frame` wraps it as a TFRecord, so preprocess.py's worker processes build whole records and its
main process never imports TensorFlow (7 s of CPU and ~600 MB less). Reading uses TensorFlow.
"""
import struct

import google_crc32c

ENCODED = "image/encoded"
FORMAT = "image/format"
HEIGHT = "image/height"
WIDTH = "image/width"
PATH = "image/path"
LINE = "image/line"
TAGS = "image/tags"

_LENGTH_DELIMITED = {1: b"\x0a", 2: b"\x12", 3: b"\x1a"}  # field number -> wire-type-2 key


def _varint(value):
    value &= 0xFFFF_FFFF_FFFF_FFFF  # int64: a negative value takes ten bytes, as in protobuf
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(number, payload):
    return _LENGTH_DELIMITED[number] + _varint(len(payload)) + payload


def _bytes(value):
    return _field(1, _field(1, value))  # Feature.bytes_list = BytesList(value=[value])


def _ints(values):
    # Feature.int64_list = Int64List(value=values), packed; an empty list is an empty message.
    packed = b"".join(_varint(value) for value in values)
    return _field(3, _field(1, packed) if packed else b"")


def encode_example(jpeg, height, width, path, line, tag_ids):
    """Serialized tf.train.Example for one image (bytes, ready for a TFRecord writer)."""
    features = {
        ENCODED: _bytes(jpeg),
        FORMAT: _bytes(b"jpeg"),
        HEIGHT: _ints([height]),
        WIDTH: _ints([width]),
        PATH: _bytes(path.encode("utf-8")),
        LINE: _ints([line]),
        TAGS: _ints(tag_ids),
    }
    # Features.feature is a map: one entry (key = 1, value = 2) per feature, in key order as
    # deterministic serialization writes them.
    entries = b"".join(_field(1, _field(1, key.encode("utf-8")) + _field(2, features[key]))
                       for key in sorted(features))
    return _field(1, entries)  # Example.features


def _masked_crc(data):
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFF_FFFF


def frame(record):
    """`record` as a TFRecord file stores it (what tf.io.TFRecordWriter.write appends): its
    length, the length's masked CRC-32C, the record, the record's masked CRC-32C."""
    length = struct.pack("<Q", len(record))
    return (length + struct.pack("<I", _masked_crc(length)) + record
            + struct.pack("<I", _masked_crc(record)))


def decode_example(serialized):
    """The fields of a serialized Example as a plain dict (for tests and tools, not the hot path)."""
    from tensorflow.core.example import example_pb2

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
