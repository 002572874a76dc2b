"""preprocess.py on your own photos: a table of photos and tags or captions (--table), a folder of
photos tagged by their embedded keywords (--photos_dir), and every kind of bad input they bring.

The scripts run as users run them (subprocesses); the records are read back and their tags
compared with what the tables and the photos' metadata say.
"""
import codecs
import io
import json
import os

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from data import harrison, keywords, photo_table, sources
from test_keywords import BOMB, DIGIKAM, LIGHTROOM
from test_preprocess import all_records, run_preprocess, same_files


def photo_bytes(index, size=(64, 48)):
    rng = np.random.default_rng(index)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (3, 4, 3), dtype=np.uint8)).resize(
        size, Image.BICUBIC).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def tags_by_path(output_dir):
    """{path: [tag, ...]} of every record, and the records per split."""
    vocab = harrison.load_records_vocab(output_dir)
    records = all_records(output_dir)
    return {record["path"]: [vocab[tag] for tag in record["tags"]]
            for split in records.values() for record in split}, records


def skipped(output_dir):
    return {item["line"]: (item["reason"], item["path"])
            for item in harrison.load_manifest(output_dir)["skipped"]}


# ------------------------------------------------------------------ a table of photos

CAPTION_TAGS = ["#Sea", "#sun", "#SUNSET", "#여행", "#Café", "#love", "#friends"]


@pytest.fixture(scope="module")
def table_dataset(tmp_path_factory):
    """A CSV as Excel writes it where the decimal mark is a comma (UTF-8 with a byte order mark,
    `;` between cells), captions with #hashtags, the photos in a folder of their own; every
    kind of bad row. Returns the paths and {line: expected skip reason}, {path: tags}."""
    root = tmp_path_factory.mktemp("table")
    images = root / "images"
    (images / "sub").mkdir(parents=True)
    rows, skips, expected = [], {}, {}
    for index in range(30):
        name = f"p{index}.jpg" if index % 5 else f"sub/p{index}.jpg"
        (images / name).write_bytes(photo_bytes(index))
        chosen = [CAPTION_TAGS[(index + k) % len(CAPTION_TAGS)] for k in range(1 + index % 3)]
        caption = f"Day {index}!\n" + " ".join(chosen) + " C# a#b"  # multi-line, quoted
        rows.append((name.replace("/", "\\") if index == 5 else name, caption))
        expected[name] = [harrison.parse_tags(tag)[0] for tag in chosen]

    def bad(path, caption, reason):
        skips[len(rows)] = reason
        rows.append((path, caption))

    whole = photo_bytes(99, (200, 200))
    (images / "truncated.jpg").write_bytes(whole[:len(whole) // 2])
    (images / "text.jpg").write_text("not a photo")
    (images / "no_hashtag.jpg").write_bytes(photo_bytes(98))
    (images / "rare.jpg").write_bytes(photo_bytes(97))
    outside = root / "outside.jpg"
    outside.write_bytes(photo_bytes(96))
    bad("p1.jpg", "#sea again", "duplicate")
    bad("nothere.jpg", "#sea", "missing")
    bad("truncated.jpg", "#sea", "truncated")
    bad("text.jpg", "#sea", "undecodable")
    bad("no_hashtag.jpg", "a lovely day, no tags", "no_hashtag")
    bad("../outside.jpg", "#sea", "outside_dataset_dir")
    bad(str(outside), "#sea", "outside_dataset_dir")
    bad("", "#sea", "no_path")
    bad("rare.jpg", "#onlyhere", "no_known_tag")  # a tag on one photo: cut by the rules
    table = root / "posts.csv"
    lines = ["path;likes;Caption"] + [
        f'{path};{index};"{caption}"' for index, (path, caption) in enumerate(rows)]
    table.write_bytes(codecs.BOM_UTF8 + "\r\n".join(lines).encode("utf-8") + b"\r\n")
    return {"table": str(table), "images": str(images), "root": str(root), "skips": skips,
            "expected": expected, "outside": str(outside)}


@pytest.fixture(scope="module")
def table_output(table_dataset, tmp_path_factory):
    output = str(tmp_path_factory.mktemp("table_out") / "records")
    result = run_preprocess(f"--table={table_dataset['table']}",
                            f"--images_dir={table_dataset['images']}", f"--records_dir={output}",
                            "--shorter_side=32", "--workers=2")
    assert result.returncode == 0, result.stderr[-3000:]
    return {"dir": output, "result": result}


def test_a_csv_of_captions_becomes_records_of_their_hashtags(table_dataset, table_output):
    output = table_output["dir"]
    by_path, records = tags_by_path(output)
    assert by_path == table_dataset["expected"]  # `sub\p5.jpg` (Windows) is sub/p5.jpg
    manifest = harrison.load_manifest(output)
    # The default splits of own photos: a tenth of the 30 usable ones for test, a tenth of the
    # rest for val.
    assert {split: len(items) for split, items in records.items()} == {
        "test": 3, "val": 2, "train": 25}
    assert manifest["dataset_dir"] == table_dataset["images"]
    assert manifest["settings"]["table"] == table_dataset["table"]
    vocab = harrison.load_records_vocab(output)
    assert sorted(vocab) == sorted(harrison.parse_tags(" ".join(CAPTION_TAGS)))
    assert "c" not in vocab and "b" not in vocab  # C# and a#b are no hashtags


def test_every_bad_row_of_a_table_is_reported(table_dataset, table_output):
    output = table_output["dir"]
    assert {line: reason for line, (reason, _) in skipped(output).items()} == table_dataset["skips"]
    stdout = table_output["result"].stdout
    assert "skipped 9 of 39 entries (" in stdout and "no_hashtag: 1" in stdout
    stats = pd.read_csv(os.path.join(output, "tag_stats.csv"))
    cut = stats[stats["cut"].notna()]
    assert cut[["tag", "photos", "cut"]].values.tolist() == [
        ["onlyhere", 1, "on fewer than 2 photos (--min_tag_photos)"]]
    assert "Traceback" not in table_output["result"].stderr


def test_outside_paths_need_a_flag_and_json_lines_take_lists(table_dataset, tmp_path):
    lines = [json.dumps({"path": "p1.jpg", "tags": ["Sea", "#Sun"]}),
             json.dumps({"path": "p2.jpg", "tags": "sea, new  york"}),
             json.dumps({"path": "../outside.jpg", "tags": ["sea"], "other": 1}),
             json.dumps({"path": table_dataset["outside"], "tags": "sun"}),  # the same file
             "{broken json",
             json.dumps({"path": "p3.jpg", "tags": [1, 2]}),
             json.dumps({"path": "p4.jpg", "tags": ""}),
             "",
             json.dumps({"path": "p6.jpg", "tags": "new york; sun", "caption": "#extra"})]
    table = tmp_path / "photos.jsonl"
    table.write_text("\n".join(lines) + "\n", encoding="utf-8")
    # Without --allow_outside_paths (the skip report; preprocess.py's run on a CSV is above).
    entries, skips, _, _ = sources.plan(sources.table(str(table), table_dataset["images"]), 1)
    assert {item["line"]: item["reason"] for item in skips} == {
        2: "outside_dataset_dir", 3: "outside_dataset_dir", 4: "malformed_row",
        5: "malformed_row", 6: "no_tags"}
    assert [entry.path for entry in entries] == ["p1.jpg", "p2.jpg", "p6.jpg"]
    output = str(tmp_path / "records")
    result = run_preprocess(f"--table={table}", f"--images_dir={table_dataset['images']}",
                            f"--records_dir={output}", "--shorter_side=32", "--test_size=1",
                            "--val_size=0", "--min_tag_photos=1", "--workers=1",
                            "--allow_outside_paths")
    assert result.returncode == 0, result.stderr[-3000:]
    by_path, _ = tags_by_path(output)
    assert by_path == {"p1.jpg": ["sea", "sun"], "p2.jpg": ["sea", "new york"],
                       "../outside.jpg": ["sea"], "p6.jpg": ["new york", "sun", "extra"]}
    assert skipped(output)[3] == ("duplicate", table_dataset["outside"])


def test_a_table_in_another_encoding_is_an_error_naming_the_line_unless_given(tmp_path):
    table = tmp_path / "excel.csv"
    table.write_bytes("path,tags\na.jpg,sea\nb.jpg,café\n".encode("cp1252"))
    result = run_preprocess(f"--table={table}", f"--records_dir={tmp_path / 'out'}")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert (f"{table}: line 3: not valid utf-8; save the table as UTF-8, or give its encoding "
            "with --table_encoding" in result.stderr)
    assert photo_table.read_table(str(table), "cp1252")[1] == (1, "b.jpg", ["café"], None)


def test_table_encodings_and_delimiters_excel_writes(tmp_path):
    unicode_text = tmp_path / "unicode.txt"  # Excel's "Unicode Text": UTF-16 with a BOM, tabs
    unicode_text.write_bytes("Path\tTags\r\na.jpg\t여행 Sea\r\n".encode("utf-16"))
    assert photo_table.read_table(str(unicode_text)) == [(0, "a.jpg", ["여행", "sea"], None)]
    json_array = tmp_path / "export.json"
    json_array.write_text(json.dumps([{"PATH": "a.jpg", "caption": "#Hi"}, ["not", "a row"]]))
    assert photo_table.read_table(str(json_array)) == [
        (0, "a.jpg", ["hi"], None), (1, "", [], ("malformed_row", "a JSON list, not an object"))]


@pytest.mark.parametrize("content, message", [
    ("file,tags\na.jpg,sea\n", "a table of photos needs a 'path' column and a 'tags' or "
                               "'caption' column; its header row has the columns 'file', 'tags'"),
    ("path\na.jpg\n", "needs a 'path' column and a 'tags' or 'caption' column"),
    ('{"path": "a.jpg"}\n', "its objects have the keys path"),
])
def test_a_table_without_the_columns_is_a_one_line_error(tmp_path, content, message):
    table = tmp_path / ("t.jsonl" if content.startswith("{") else "t.csv")
    table.write_text(content)
    result = run_preprocess(f"--table={table}", f"--records_dir={tmp_path / 'out'}")
    assert result.returncode == 2 and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("arguments, message", [
    (["--table=t.csv", "--dataset_dir=d"], "give one of --sample, --dataset_dir, --table and "
                                            "--photos_dir, not --dataset_dir and --table"),
    (["--photos_dir=p", "--images_dir=i"], "--images_dir is for --table"),
    (["--photos_dir=/nonexistent/photos"], "photos folder not found: /nonexistent/photos"),
    (["--table=/nonexistent/t.csv"], "cannot read the table /nonexistent/t.csv"),
])
def test_source_flags_are_checked(tmp_path, arguments, message):
    result = run_preprocess(*arguments, f"--records_dir={tmp_path / 'out'}")
    assert result.returncode == 2 and message in result.stderr, result.stderr


# ------------------------------------------------------------------ a folder of keyworded photos

@pytest.fixture(scope="module")
def photos_dataset(tmp_path_factory):
    """A photo library: JPEGs keyworded in IPTC and XMP (some by Lightroom and digiKam), a PNG,
    hidden files and other files beside them, and photos with broken or hostile metadata."""
    folder = tmp_path_factory.mktemp("library") / "Pictures"
    (folder / "2024" / "summer").mkdir(parents=True)
    (folder / ".thumbnails").mkdir()
    expected, skips = {}, {}
    pool = ["Beach", "#sea", "SUNSET", "New York", "Café", "family"]
    for index in range(24):
        name = f"2024/summer/IMG_{index:04d}.JPG" if index % 2 else f"IMG_{index:04d}.jpg"
        words = [pool[(index + k) % len(pool)] for k in range(1 + index % 3)]
        iptc = keywords.iptc_block(words[:1]) if index % 3 else None
        data = keywords.embed_metadata(photo_bytes(index), keywords.xmp_packet(words), iptc)
        (folder / name).write_bytes(data)
        expected[name] = harrison.parse_tags(" ".join(word.replace(" ", "_") for word in words))
        expected[name] = [tag.replace("_", " ") for tag in expected[name]]
    special = {"lightroom.jpg": (LIGHTROOM, ["beach", "sunset", "portugal"]),
               "digikam.jpg": (DIGIKAM, ["family"])}  # its other two: cut, on one photo
    for name, (packet, tags) in special.items():
        (folder / name).write_bytes(keywords.embed_metadata(photo_bytes(len(expected)),
                                                            packet.encode("utf-8")))
        expected[name] = tags
    image = Image.open(io.BytesIO(photo_bytes(50)))
    from PIL import PngImagePlugin
    info = PngImagePlugin.PngInfo()
    info.add_itxt("XML:com.adobe.xmp", keywords.xmp_packet(["Sea", "Portugal"]).decode())
    image.save(folder / "scan.png", pnginfo=info)
    expected["scan.png"] = ["sea", "portugal"]
    truncated = keywords.embed_metadata(photo_bytes(63, (300, 300)), keywords.xmp_packet(["sea"]))
    troubles = {
        "plain.jpg": (photo_bytes(60), "no_keywords"),
        "broken_xmp.jpg": (keywords.embed_metadata(photo_bytes(61), b"<x:xmpmeta><rdf:RDF>"),
                           "malformed_metadata"),
        "bomb.jpg": (keywords.embed_metadata(photo_bytes(62), BOMB.encode()),
                     "malformed_metadata"),
        "truncated.jpg": (truncated[:len(truncated) - 600], "truncated"),
        "empty.jpg": (b"", "empty"),
        "text.jpg": (b"not a photo", "undecodable"),
        "lonely.jpg": (keywords.embed_metadata(photo_bytes(64), keywords.xmp_packet(["Once"])),
                       "no_known_tag"),
    }
    for name, (data, reason) in troubles.items():
        (folder / name).write_bytes(data)
        skips[name] = reason
    (folder / "notes.txt").write_text("not a photo")
    (folder / ".hidden.jpg").write_bytes(photo_bytes(70))
    (folder / ".thumbnails" / "IMG_0000.jpg").write_bytes(photo_bytes(71))
    return {"folder": str(folder), "expected": expected, "skips": skips}


@pytest.fixture(scope="module")
def photos_output(photos_dataset, tmp_path_factory):
    output = str(tmp_path_factory.mktemp("photos_out") / "records")
    result = run_preprocess(f"--photos_dir={photos_dataset['folder']}",
                            f"--records_dir={output}", "--shorter_side=32", "--workers=2")
    assert result.returncode == 0, result.stderr[-3000:]
    return {"dir": output, "result": result}


def test_a_folder_of_keyworded_photos_becomes_records_of_their_keywords(photos_dataset,
                                                                        photos_output):
    output = photos_output["dir"]
    by_path, records = tags_by_path(output)
    assert by_path == photos_dataset["expected"]
    assert {split: len(items) for split, items in records.items()} == {
        "test": 2, "val": 2, "train": 23}
    manifest = harrison.load_manifest(output)
    reasons = {path: reason for reason, path in skipped(output).values()}
    assert reasons == photos_dataset["skips"]  # hidden files and notes.txt are not listed
    assert manifest["entries"] == len(photos_dataset["expected"]) + len(photos_dataset["skips"])
    bomb = next(item for item in manifest["skipped"] if item["path"] == "bomb.jpg")
    assert "refused unread" in bomb["detail"]
    stats = pd.read_csv(os.path.join(output, "tag_stats.csv"))
    assert stats[stats["cut"].notna()]["tag"].tolist() == ["crianças & família", "kids", "once"]


def test_keyworded_photos_give_the_same_records_on_any_number_of_workers(
        photos_dataset, photos_output, tmp_path):
    single = str(tmp_path / "records")
    arguments = [f"--photos_dir={photos_dataset['folder']}", f"--records_dir={single}",
                 "--shorter_side=32", "--workers=1"]
    result = run_preprocess(*arguments)
    assert result.returncode == 0, result.stderr[-3000:]
    same_files(photos_output["dir"], single)
    # New keywords in a photo: other input, refused without --overwrite.
    changed = os.path.join(photos_dataset["folder"], "plain.jpg")
    original = open(changed, "rb").read()
    try:
        with open(changed, "wb") as stream:
            stream.write(keywords.embed_metadata(original, keywords.xmp_packet(["sea"])))
        result = run_preprocess(*arguments)
    finally:
        with open(changed, "wb") as stream:
            stream.write(original)
    assert result.returncode == 2 and "photos_sha256" in result.stderr
