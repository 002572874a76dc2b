"""A table of photos and their tags: CSV (or TSV) or JSON Lines, one row a photo.

Columns (CSV: a header row, names in any case; JSON Lines: the keys of each object):
- `path`: the photo, relative to the images folder (preprocess.py's --images_dir, by default
  the table's folder);
- `tags`: its tags, separated by commas (or semicolons) when the cell has any, else by
  whitespace (`sunset, new york` or `#sunset #beach`); in JSON Lines also a list of strings;
- `caption`: a caption whose `#hashtags` are its tags (as on Instagram).
`tags` or `caption` or both (a row's tags are then the union); other columns are ignored.

Read with the csv module, not pandas: every cell stays text (pandas would read a `NA` or
`null` hashtag as a missing value, and numbers as numbers), and each row keeps its number for
the skip report. The encoding is UTF-8 unless the file starts with a UTF-8 or UTF-16 byte order
mark (Excel's "CSV UTF-8" and "Unicode text") or `encoding` names another; a file that does not
decode is a one-line error naming the line, never guessed at. The delimiter is the header's
comma, tab or semicolon (Excel writes `;` where the decimal mark is a comma).

`read_table` returns one (line, path, tags, skip) per row: `line` the row's 0-based number
under the header (JSON Lines: the file's 0-based line), `tags` normalized (data/vocabulary.py),
`skip` None or (reason, detail) for a row that names no photo or no tag.
"""
import codecs
import csv
import io
import json

from data import harrison, vocabulary

JSON_EXTENSIONS = (".jsonl", ".ndjson", ".json")
DELIMITERS = (",", "\t", ";")
COLUMNS = ("path", "tags", "caption")


def read_table(path, encoding="utf-8"):
    """[(line, path, tags, skip)] of the table at `path`; raises harrison.FormatError when the
    file cannot be read as a table at all."""
    try:
        with open(path, "rb") as stream:
            raw = stream.read()
    except OSError as error:
        raise harrison.FormatError(f"cannot read the table {path}: "
                                   f"{error.strerror or error}") from None
    text = _decode(raw, encoding, path)
    if path.lower().endswith(JSON_EXTENSIONS):
        return _json_rows(text, path)
    return _csv_rows(text, path)


def _decode(raw, encoding, path):
    for bom, codec in ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"),
                       (codecs.BOM_UTF16_BE, "utf-16")):
        if raw.startswith(bom):
            encoding = codec
            break
    try:
        return raw.decode(encoding)
    except LookupError:
        raise harrison.FormatError(f"unknown encoding --table_encoding={encoding}") from None
    except UnicodeDecodeError as error:
        line = raw[:error.start].count(b"\n") + 1
        raise harrison.FormatError(
            f"{path}: line {line}: not valid {encoding}; save the table as UTF-8, or give its "
            "encoding with --table_encoding (e.g. cp1252: Excel's CSV on Windows)") from None


def _row(line, cells, has_tags, has_caption):
    """(line, path, tags, skip) of one row's cells {column: value}."""
    photo = (cells.get("path") or "").strip()
    tags_cell, caption = cells.get("tags"), cells.get("caption") or ""
    raw = list(tags_cell) if isinstance(tags_cell, list) else vocabulary.tags_of_cell(
        tags_cell or "")
    tags = vocabulary.unique_tags(raw + vocabulary.hashtags(caption))
    skip = None
    if not photo:
        skip = ("no_path", "no photo path in this row")
    elif not tags and has_caption and not has_tags:
        skip = ("no_hashtag", f"caption without a #hashtag: {caption.strip()[:80]!r}")
    elif not tags:
        skip = ("no_tags", "empty tags cell" + (" and no #hashtag in the caption"
                                                if has_caption else ""))
    return line, photo, tags, skip


def _csv_rows(text, path):
    header = text.split("\n", 1)[0]
    delimiter = next((mark for mark in DELIMITERS if mark in header), ",")
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        names = [name.strip().lower() for name in next(reader, [])]
        index = {name: position for position, name in reversed(list(enumerate(names)))}
        _check_columns(set(index), path, "its header row has the columns "
                       f"{', '.join(map(repr, names)) or 'none'}")
        rows = []
        for line, row in enumerate(reader):
            cells = {name: row[index[name]] for name in COLUMNS
                     if name in index and index[name] < len(row)}
            rows.append(_row(line, cells, "tags" in index, "caption" in index))
    except csv.Error as error:
        raise harrison.FormatError(f"{path}: line {reader.line_num}: {error}") from None
    return rows


def _json_rows(text, path):
    if text.lstrip().startswith("["):  # a JSON array of objects rather than JSON Lines
        try:
            objects = json.loads(text)
        except ValueError as error:
            raise harrison.FormatError(f"{path}: not valid JSON: {error}") from None
        lines = list(enumerate(objects))
    else:
        lines = [(line, content) for line, content in enumerate(text.splitlines())
                 if content.strip()]
    parsed = []
    for line, content in lines:
        try:
            item = json.loads(content) if isinstance(content, str) else content
        except ValueError as error:
            parsed.append((line, f"not valid JSON: {error}"))
            continue
        if not isinstance(item, dict):
            parsed.append((line, f"a JSON {type(item).__name__}, not an object"))
            continue
        parsed.append((line, {str(key).strip().lower(): value for key, value in item.items()}))
    keys = set().union(*(item for _, item in parsed if isinstance(item, dict)))
    _check_columns(keys, path, f"its objects have the keys {', '.join(sorted(keys)) or 'none'}")
    return [_json_row(line, item, keys) for line, item in parsed]


def _json_row(line, item, keys):
    if isinstance(item, str):
        return line, "", [], ("malformed_row", item)
    bad = [key for key in COLUMNS if key in item and item[key] is not None and not (
        isinstance(item[key], str) or key == "tags" and isinstance(item[key], list)
        and all(isinstance(tag, str) for tag in item[key]))]
    if bad:
        return line, str(item.get("path") or ""), [], (
            "malformed_row", f"{bad[0]!r} should be text" + (
                " or a list of texts" if bad[0] == "tags" else ""))
    return _row(line, item, "tags" in keys, "caption" in keys)


def _check_columns(found, path, what):
    if "path" not in found or not found & {"tags", "caption"}:
        raise harrison.FormatError(
            f"{path}: a table of photos needs a 'path' column and a 'tags' or 'caption' "
            f"column; {what}")

