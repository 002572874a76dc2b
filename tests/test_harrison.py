"""HARRISON format parsing (data/harrison.py), on the real lists when present and on crafted files."""
import os

import pytest

from data import harrison

REAL = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared",
                    "harrison")
needs_real = pytest.mark.skipif(not os.path.isfile(os.path.join(REAL, "tag_list.txt")),
                                reason="real HARRISON lists not available")


def _write(path, data):
    with open(path, "wb") as handle:
        handle.write(data if isinstance(data, bytes) else data.encode("utf-8"))


@needs_real
def test_real_vocabulary_and_lists():
    vocab = harrison.read_vocab_index(os.path.join(REAL, "vocab_index.txt"))
    assert len(vocab) == 997
    assert vocab[0] == "love" and vocab[1] == "friend" and vocab[996] == "daytime"
    paths, tag_lines = harrison.read_lists(REAL)
    assert len(paths) == len(tag_lines) == 57383
    assert paths[0] == "instagram_dataset/sea/image_50.jpg"
    assert tag_lines[0] == "sea instapic instagram trip travel "  # the trailing space is real
    assert harrison.parse_tags(tag_lines[0]) == ["sea", "instapic", "instagram", "trip", "travel"]
    used = {tag for line in tag_lines for tag in harrison.parse_tags(line)}
    assert used == set(vocab)  # exactly the vocabulary occurs, nothing dropped on the real data
    assert all(harrison.relative_path_key(path) == path for path in paths)
    assert paths[50762] == "instagram_dataset/family/image_2411.jpg"  # a known corrupt entry


def test_crlf_bom_and_utf8_hashtags(tmp_path):
    _write(tmp_path / "data_list.txt", "\ufeffa/1.jpg\r\na/2.jpg\r\n")
    _write(tmp_path / "tag_list.txt", "café 여행 \r\ncafe\u0301 love \r\n")
    _write(tmp_path / "vocab_index.txt", "love      0\r\ncafé      1\r\n여행        2\r\n")
    paths, tag_lines = harrison.read_lists(str(tmp_path))
    assert paths == ["a/1.jpg", "a/2.jpg"]
    assert harrison.parse_tags(tag_lines[0]) == ["café", "여행"]
    # A decomposed é (e + combining accent) is the same hashtag as the composed one.
    assert harrison.parse_tags(tag_lines[1]) == ["café", "love"]
    assert harrison.read_vocab_index(str(tmp_path / "vocab_index.txt")) == ["love", "café", "여행"]


def test_file_without_final_newline_and_duplicate_tags(tmp_path):
    _write(tmp_path / "data_list.txt", "a/1.jpg\na/2.jpg")
    _write(tmp_path / "tag_list.txt", "sea sea love \nlove ")
    paths, tag_lines = harrison.read_lists(str(tmp_path))
    assert paths == ["a/1.jpg", "a/2.jpg"]
    assert harrison.parse_tags(tag_lines[0]) == ["sea", "love"]


@pytest.mark.parametrize("text, message", [
    ("love 0\nsea 2\n", "line 1: id '2' should be 1"),
    ("love 0\nsea\n", "line 1: expected 'tag id'"),
    ("love 0\nsea one\n", "line 1: id 'one'"),
    ("love 0\nlove 1\n", "line 1: tag 'love' already on line 0"),
    ("love 0 extra\n", "line 0: expected 'tag id'"),
    ("", "it is empty"),
])
def test_malformed_vocabulary_is_a_one_line_error(tmp_path, text, message):
    _write(tmp_path / "vocab_index.txt", text)
    with pytest.raises(harrison.FormatError, match="malformed vocabulary") as error:
        harrison.read_vocab_index(str(tmp_path / "vocab_index.txt"))
    assert message in str(error.value) and "\n" not in str(error.value)


def test_list_errors(tmp_path):
    with pytest.raises(harrison.FormatError, match="dataset directory not found"):
        harrison.read_lists(str(tmp_path / "nope"))
    with pytest.raises(harrison.FormatError, match="image list not found"):
        harrison.read_lists(str(tmp_path))
    _write(tmp_path / "data_list.txt", "a.jpg\nb.jpg\n")
    _write(tmp_path / "tag_list.txt", "love \n")
    with pytest.raises(harrison.FormatError, match="has 2 lines but tag_list.txt has 1"):
        harrison.read_lists(str(tmp_path))
    _write(tmp_path / "tag_list.txt", b"love \n\xff\xfe \n")
    with pytest.raises(harrison.FormatError, match="line 1: not valid UTF-8"):
        harrison.read_lists(str(tmp_path))


@pytest.mark.parametrize("path, key", [
    ("instagram_dataset/sea/image_1.jpg", "instagram_dataset/sea/image_1.jpg"),
    ("instagram_dataset/./sea//image_1.jpg ", "instagram_dataset/sea/image_1.jpg"),
    ("instagram_dataset/sea/../sun/image_1.jpg", "instagram_dataset/sun/image_1.jpg"),
    ("../secret.jpg", None),
    ("instagram_dataset/../../secret.jpg", None),
    ("/etc/passwd", None),
    ("C:/images/a.jpg", None),
    ("", None),
    (".", None),
])
def test_relative_path_key(path, key):
    assert harrison.relative_path_key(path) == key


def test_output_readers(tmp_path):
    with pytest.raises(harrison.FormatError, match="run preprocess.py first"):
        harrison.load_manifest(str(tmp_path))
    with pytest.raises(harrison.FormatError, match="run preprocess.py first"):
        harrison.load_records_vocab(str(tmp_path))
    harrison.write_vocab(str(tmp_path / "vocab.txt"), ["love", "café"])
    assert harrison.load_records_vocab(str(tmp_path)) == ["love", "café"]
    _write(tmp_path / "manifest.json", '{"vocab_size": 2}')
    assert harrison.load_manifest(str(tmp_path)) == {"vocab_size": 2}


def test_vocab_index_writer_matches_harrison_layout(tmp_path):
    harrison.write_vocab_index(str(tmp_path / "v.txt"), ["love", "friend"])
    assert (tmp_path / "v.txt").read_text() == "love                  0\nfriend                1\n"
    assert harrison.read_vocab_index(str(tmp_path / "v.txt")) == ["love", "friend"]
