"""Where preprocess.py's photos and tags come from, and which of them it can use.

Three sources, each read into a `Catalogue` (a folder, one row per photo: its path in that
folder and its normalized tags, or why it has none):
- `harrison(dataset_dir)`: HARRISON's lists (data/harrison.py), with their vocabulary file; the
  default;
- `table(path, ...)`: a CSV or JSON Lines table of photos and tags or captions
  (data/photo_table.py);
- `photos(folder, ...)`: a folder of photos whose tags are their embedded keywords
  (data/keywords.py).

`plan` then decides, without decoding any image, what build_records converts: rows naming a
photo outside the folder (unless allowed), repeating an earlier path, or whose file is missing
or empty are skipped; the vocabulary is chosen from the tags of the photos left
(data/vocabulary.py: minimum photos per tag, maximum size); a photo left with no tag in it is
skipped too. Every skip keeps its row number and reason for the manifest.
"""
import collections
import hashlib
import os
import posixpath
import stat

from tqdm import tqdm

from data import harrison, image_files, keywords, photo_table, vocabulary


class Catalogue:
    """`root`: the folder the photos' paths are relative to (the records' `image/path`);
    `rows`: [(line, path, tags, skip)], skip None or (reason, detail); `settings`: what
    identifies the input (a re-run with other input refuses without --overwrite); `listed`: a
    vocabulary file's tags in order, or None; `allow_outside`: paths may leave `root`, else
    such a row is skipped with `outside_detail`."""

    def __init__(self, root, rows, settings, listed=None, allow_outside=False,
                 outside_detail="absolute or '..' path: photos must be inside their folder"):
        self.root, self.rows, self.settings = root, rows, settings
        self.listed, self.allow_outside = listed, allow_outside
        self.outside_detail = outside_detail


class Entry:
    __slots__ = ("line", "path", "tag_ids")

    def __init__(self, line, path, tag_ids):
        self.line, self.path, self.tag_ids = line, path, tag_ids


def _sha256_of_files(paths):
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as handle:
            digest.update(hashlib.sha256(handle.read()).digest())
    return digest.hexdigest()


def harrison_lists(dataset_dir):
    """The Catalogue of a HARRISON root (data_list.txt, tag_list.txt, vocab_index.txt)."""
    paths, tag_lines = harrison.read_lists(dataset_dir)
    listed = harrison.read_vocab_index(os.path.join(dataset_dir, harrison.VOCAB_INDEX))
    rows = [(line, path, harrison.parse_tags(tag_line), None)
            for line, (path, tag_line) in enumerate(zip(paths, tag_lines))]
    lists = [os.path.join(dataset_dir, name)
             for name in (harrison.DATA_LIST, harrison.TAG_LIST, harrison.VOCAB_INDEX)]
    return Catalogue(dataset_dir, rows, {"lists_sha256": _sha256_of_files(lists)}, listed,
                     outside_detail="empty, absolute or '..' path: images must be inside "
                                    "--dataset_dir")


def table(path, images_dir=None, encoding="utf-8", allow_outside=False):
    """The Catalogue of a CSV or JSON Lines table; photo paths are relative to `images_dir`
    (default: the table's folder)."""
    rows = photo_table.read_table(path, encoding)
    root = images_dir or os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(root):
        raise harrison.FormatError(f"images folder not found: {root}")
    settings = {"table": os.path.abspath(path), "table_sha256": _sha256_of_files([path])}
    if encoding != "utf-8":
        settings["table_encoding"] = encoding
    if allow_outside:
        settings["allow_outside_paths"] = True
    return Catalogue(root, rows, settings, allow_outside=allow_outside,
                     outside_detail=f"absolute or '..' path: photos must be inside {root} "
                                    "(--allow_outside_paths allows others)")


def find_photos(folder):
    """The image files under `folder` (hidden files and folders left out), as sorted paths
    relative to it with `/` separators."""
    found = []
    for parent, folders, names in os.walk(folder):
        folders[:] = [name for name in folders if not name.startswith(".")]
        relative = os.path.relpath(parent, folder)
        found.extend(posixpath.normpath(posixpath.join(relative.replace(os.sep, "/"), name))
                     for name in names if image_files.is_image_name(name))
    return sorted(found)


def _keyword_row(job):
    """(tags, skip) of one photo (a worker's job: its path)."""
    try:
        tags = vocabulary.unique_tags(keywords.read_keywords(job))
    except keywords.MetadataError as error:
        return [], (error.reason, error.detail)
    return tags, None if tags else ("no_keywords", "no IPTC Keywords and no XMP dc:subject")


def photos(folder, run_map=map, progress=True):
    """The Catalogue of a folder of photos tagged by their embedded keywords, read by
    `run_map(function, paths)` (a process pool's ordered map, or map)."""
    if not os.path.isdir(folder):
        raise harrison.FormatError(f"photos folder not found: {folder}")
    paths = find_photos(folder)
    if not paths:
        raise harrison.FormatError(f"no photos ({', '.join(image_files.IMAGE_EXTENSIONS)}) in "
                                   f"{folder} or its subfolders")
    results = run_map(_keyword_row, [os.path.join(folder, path) for path in paths])
    results = tqdm(results, total=len(paths), unit="photo", desc="keywords", mininterval=0.5,
                   disable=not progress, dynamic_ncols=True)
    rows, digest = [], hashlib.sha256()
    for line, ((tags, skip), path) in enumerate(zip(results, paths)):  # results first: the
        # progress bar sees their end
        rows.append((line, path, tags, skip))
        digest.update(repr((path, tags, skip)).encode("utf-8"))
    return Catalogue(folder, rows, {"photos_sha256": digest.hexdigest()})


def _path_key(path, allow_outside):
    """The normalized path of a row, or None when it leaves the folder and that is not allowed
    (data/harrison.relative_path_key)."""
    key = harrison.relative_path_key(path)
    if key is None and allow_outside and path.strip():
        key = os.path.normpath(path.strip())
    return key


def plan(catalogue, min_tag_photos=vocabulary.DEFAULT_MIN_PHOTOS,
         max_vocab=vocabulary.DEFAULT_MAX_SIZE):
    """(usable entries, skipped [{line, path, reason, detail}], Counter of dropped tags,
    vocabulary.Vocabulary), in row order. Everything decidable without decoding is decided."""
    skipped, candidates, first_line = [], [], {}

    def skip(line, path, reason, detail):
        skipped.append({"line": line, "path": path, "reason": reason, "detail": detail})

    for line, path, tags, problem in catalogue.rows:
        if problem:
            skip(line, path, *problem)
            continue
        key = _path_key(path, catalogue.allow_outside)
        if key is None:
            skip(line, path, "outside_dataset_dir", catalogue.outside_detail)
            continue
        where = os.path.normpath(os.path.join(catalogue.root, key))
        if where in first_line:
            skip(line, path, "duplicate", f"same path as line {first_line[where]}")
            continue
        first_line[where] = line
        try:
            status = os.stat(where)
        except OSError:
            skip(line, key, "missing", "file not found")
            continue
        if not stat.S_ISREG(status.st_mode):
            skip(line, key, "missing", "not a regular file")
        elif status.st_size == 0:
            skip(line, key, "empty", "file is empty (0 bytes)")
        else:
            candidates.append((line, key, tags))
    vocab = vocabulary.choose([tags for _, _, tags in candidates], min_tag_photos, max_vocab,
                              catalogue.listed)
    tag_ids = {tag: index for index, tag in enumerate(vocab.tags)}
    entries, dropped = [], collections.Counter()
    for line, key, tags in candidates:
        known = [tag_ids[tag] for tag in tags if tag in tag_ids]
        dropped.update(tag for tag in tags if tag not in tag_ids)
        if known:
            entries.append(Entry(line, key, known))
        else:
            skip(line, key, "no_known_tag",
                 f"none of its tags is in the vocabulary: {' '.join(tags)[:100]!r}")
    return entries, skipped, dropped, vocab
