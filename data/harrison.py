"""HARRISON's on-disk format, and the small readers every script uses on preprocess.py's output.

A HARRISON root holds:

- `data_list.txt`: one image path per line, relative to the root
  (`instagram_dataset/sea/image_50.jpg`);
- `tag_list.txt`: the same number of lines, the image's hashtags separated by spaces, each line
  ending with a trailing space (`sea instapic instagram trip travel `);
- `vocab_index.txt`: `tag<spaces>id` per line, ids equal to the row number, ordered by frequency;
- `instagram_dataset/<seed hashtag>/image_<n>.jpg`: the photos.

Lines may end with LF or CRLF, and tags may be any UTF-8 text. Everything here is pure Python
(no TensorFlow), so it is cheap to import in worker processes.
"""
import json
import os
import posixpath
import unicodedata

import cli
from data import atomic, vocabulary

DATA_LIST = "data_list.txt"
TAG_LIST = "tag_list.txt"
VOCAB_INDEX = "vocab_index.txt"

# What preprocess.py writes beside the shards (the record schema itself is in data/records.py).
VOCAB_FILE = "vocab.txt"
MANIFEST_FILE = "manifest.json"
TAG_STATS_FILE = "tag_stats.csv"  # per-tag image counts of each split


class FormatError(cli.UserError):
    """Input that cannot be processed at all."""


def _read_lines(path, what):
    """The lines of a UTF-8 text file, LF or CRLF, without line terminators or a final empty line."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except FileNotFoundError:
        raise FormatError(f"{what} not found: {path}") from None
    except OSError as error:
        raise FormatError(f"cannot read {what} {path}: {error.strerror}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = raw[:error.start].count(b"\n")
        raise FormatError(f"{path}: line {line}: not valid UTF-8") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    # Only a CR right before the LF is a line ending; split("\n") keeps it, so drop it here.
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def parse_tags(line):
    """The hashtags of one tag_list.txt line, normalized (data/vocabulary.py: NFC, case-folded,
    no leading `#`), in order, without duplicates."""
    return vocabulary.unique_tags(line.split())


def read_vocab_index(path):
    """The tags of vocab_index.txt, in file order (the position is the tag id).

    Every line must be `tag<spaces>id` with id equal to its 0-based row; anything else is a
    FormatError naming the line, since a shifted id would silently mislabel every image.
    """
    vocab = []
    seen = {}
    for row, line in enumerate(_read_lines(path, "vocabulary file")):
        fields = line.split()
        where = f"malformed vocabulary file {path}: line {row}"
        if len(fields) != 2:
            raise FormatError(f"{where}: expected 'tag id', got {line.strip()!r}")
        tag, index = vocabulary.normalize_tag(fields[0]), fields[1]
        if not index.isdigit() or int(index) != row:
            raise FormatError(f"{where}: id {index!r} should be {row} (ids must equal the row number)")
        if not tag:
            raise FormatError(f"{where}: {fields[0]!r} is not a tag")
        if tag in seen:
            raise FormatError(f"{where}: tag {tag!r} already on line {seen[tag]}")
        seen[tag] = row
        vocab.append(tag)
    if not vocab:
        raise FormatError(f"malformed vocabulary file {path}: it is empty")
    return vocab


def read_lists(dataset_dir):
    """(paths, tag lines) of data_list.txt and tag_list.txt, checked to have the same length."""
    if not os.path.isdir(dataset_dir):
        raise FormatError(f"dataset directory not found: {dataset_dir}")
    paths = _read_lines(os.path.join(dataset_dir, DATA_LIST), "image list")
    tag_lines = _read_lines(os.path.join(dataset_dir, TAG_LIST), "tag list")
    if len(paths) != len(tag_lines):
        raise FormatError(f"{DATA_LIST} has {len(paths)} lines but {TAG_LIST} has {len(tag_lines)}; "
                          "they must match line for line")
    return paths, tag_lines


def relative_path_key(path):
    """The normalized form of a data_list.txt path, or None if it leaves the dataset root.

    Absolute paths, drive letters and any `..` that climbs above the root are refused: the lists
    must not make the script read files outside --dataset_dir.
    """
    path = path.strip().replace("\\", "/")
    if not path or path.startswith("/") or (len(path) > 1 and path[1] == ":"):
        return None
    normalized = posixpath.normpath(path)
    if normalized == ".." or normalized.startswith("../") or normalized == ".":
        return None
    return normalized


def write_vocab(path, vocab):
    """vocab.txt: one tag per line, the line number is the tag id."""
    atomic.write_text(path, "".join(tag + "\n" for tag in vocab))


def write_vocab_index(path, vocab):
    """vocab_index.txt in HARRISON's layout (tag padded to 22 columns, then the id)."""
    atomic.write_text(path, "".join(f"{tag:<21} {index}\n" for index, tag in enumerate(vocab)))


def load_manifest(records_dir):
    """manifest.json of a preprocess.py output directory, as a dict.

    Raises FormatError (one line) when it is missing: the manifest is written last, so its
    absence means preprocess.py has not run or has not finished there.
    """
    path = os.path.join(records_dir, MANIFEST_FILE)
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        raise FormatError(f"no {MANIFEST_FILE} in {records_dir}: run preprocess.py first "
                          "(or let it finish)") from None
    except ValueError as error:
        raise FormatError(f"{path} is not valid JSON: {error}") from None


def load_records_vocab(records_dir):
    """The tags of a preprocess.py output directory (vocab.txt), the index is the tag id."""
    path = os.path.join(records_dir, VOCAB_FILE)
    if not os.path.isfile(path):
        raise FormatError(f"no {VOCAB_FILE} in {records_dir}: run preprocess.py first")
    vocab = _read_lines(path, "vocabulary")
    if not vocab or any(not tag or tag != tag.strip() for tag in vocab):
        raise FormatError(f"{path}: expected one non-empty tag per line")
    # Tags are printed as they are (predict.py): a control character would drive the terminal.
    controlled = next((i for i, tag in enumerate(vocab) if any(
        unicodedata.category(character) == "Cc" for character in tag)), None)
    if controlled is not None:
        raise FormatError(f"{path}: the tag on line {controlled + 1} holds a control character")
    return vocab


def split_images(records_dir, split):
    """How many images a split of preprocess.py's output holds (manifest.json), None when the
    manifest does not say."""
    info = load_manifest(records_dir).get("splits", {}).get(split)
    images = info.get("images") if isinstance(info, dict) else None
    return images if isinstance(images, int) else None
