"""Tags as people write them (data/vocabulary.py): one spelling, captions' #hashtags, the
vocabulary rules, and their defaults on the real HARRISON lists."""
import os

import pandas as pd
import pytest

from data import harrison, vocabulary

REAL = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared",
                    "harrison")
needs_real = pytest.mark.skipif(not os.path.isfile(os.path.join(REAL, "tag_list.txt")),
                                reason="real HARRISON lists not available")


@pytest.mark.parametrize("written, tag", [
    ("#Sunset", "sunset"), ("SUNSET", "sunset"), ("##sunset", "sunset"), ("＃東京", "東京"),
    ("Cafe\u0301", "café"), ("CAFÉ", "café"), ("Straße", "strasse"), ("ΣΊΣΥΦΟΣ", "σίσυφοσ"),
    ("  New \t York ", "new york"), ("#", ""), ("여행", "여행"), ("İstanbul", "i̇stanbul"),
])
def test_one_spelling_per_tag(written, tag):
    assert vocabulary.normalize_tag(written) == tag
    assert vocabulary.normalize_tag(tag) == tag  # idempotent


@pytest.mark.parametrize("caption, tags", [
    ("Sunset at the beach #sunset #Beach #LOVE", ["sunset", "Beach", "LOVE"]),
    ("#여행 #東京 #ПРИВЕТ #café #สวัสดี #नमस्ते #سلام", ["여행", "東京", "ПРИВЕТ", "café", "สวัสดี",
                                                  "नमस्ते", "سلام"]),
    ("I code in C# and F#, a#b is not one; #1 neither", []),
    ("#tbt,#fun.#me! (#summer) #don't", ["tbt", "fun", "me", "summer", "don"]),
    ("#love❤️#sun☀ #nature_lover #2024summer #2024", ["love", "sun", "nature_lover",
                                                     "2024summer"]),
    ("line one\n#first\tline two #second", ["first", "second"]),
    ("＃ラーメン好き &#39;quoted&#39; url.com/#anchor", ["ラーメン好き"]),
    ("no hashtag at all # here", []),
    ("#می‌خواهم", ["می‌خواهم"]),  # a zero-width non-joiner is part of a Persian word
])
def test_hashtags_as_instagram_links_them(caption, tags):
    assert vocabulary.hashtags(caption) == tags


def test_a_tags_cell_splits_on_commas_else_on_whitespace():
    assert vocabulary.tags_of_cell("sunset, New York,beach") == ["sunset", " New York", "beach"]
    assert vocabulary.tags_of_cell("sunset; beach") == ["sunset", " beach"]
    assert vocabulary.tags_of_cell("#sunset  #beach\tlove") == ["#sunset", "#beach", "love"]
    assert vocabulary.unique_tags(["#Sea", "sea", " SEA ", "", "#", "sky"]) == ["sea", "sky"]


def test_rules_cut_rare_tags_then_keep_the_most_frequent():
    photos = [["sea", "sun", "rare"], ["sea", "sun"], ["sea", "sky"], ["sky", "sea"], ["b", "a"],
              ["a", "b"]]
    chosen = vocabulary.choose(photos, min_photos=2, max_size=3)
    # by photos: sea 4, then a, b, sky, sun with 2 each (ties by tag); rare on 1
    assert chosen.tags == ["sea", "a", "b"]
    assert chosen.cut == {"rare": "on fewer than 2 photos (--min_tag_photos)",
                          "sky": "not among the 3 most frequent (--max_vocab)",
                          "sun": "not among the 3 most frequent (--max_vocab)"}
    assert vocabulary.choose(photos, min_photos=1, max_size=100).tags == [
        "sea", "a", "b", "sky", "sun", "rare"]


def test_a_vocabulary_file_keeps_its_order_and_cuts_what_it_lacks():
    photos = [["sun", "sea", "extra"], ["sea"], ["sun", "sea"], ["moon"]]
    chosen = vocabulary.choose(photos, 2, 1000, listed=["moon", "sun", "sea", "never"])
    assert chosen.tags == ["sun", "sea"]  # the file's order, not the counts'
    assert chosen.cut == {"extra": "not in the vocabulary file",
                          "moon": "on fewer than 2 photos (--min_tag_photos)",
                          "never": "on fewer than 2 photos (--min_tag_photos)"}
    capped = vocabulary.choose(photos, 1, 2, listed=["moon", "sun", "sea"])
    assert capped.tags == ["sun", "sea"] and "moon" in capped.cut  # the two most frequent


def test_tag_stats_show_what_was_kept_and_what_was_cut():
    stats = pd.DataFrame({"tag": ["sea", "sun"], "id": [0, 1], "train": [3, 1], "test": [1, 1]})
    nothing_cut = vocabulary.Vocabulary(["sea", "sun"], {"sea": 4, "sun": 2}, {})
    assert nothing_cut.with_cut_tags(stats) is stats  # tag_stats.csv as before the rules
    chosen = vocabulary.Vocabulary(["sea", "sun"], {"sea": 4, "sun": 2, "x": 1, "y": 1, "z": 3},
                                   {"x": "rare", "y": "rare", "z": "not listed"})
    table = chosen.with_cut_tags(stats)
    assert table.to_csv(index=False, lineterminator="\n") == (
        "tag,id,train,test,photos,cut\n"
        "sea,0,3,1,4,\n"
        "sun,1,1,1,2,\n"
        "z,,,,3,not listed\n"
        "x,,,,1,rare\n"
        "y,,,,1,rare\n")


@needs_real
def test_the_defaults_give_harrison_its_997_tags():
    paths, tag_lines = harrison.read_lists(REAL)
    listed = harrison.read_vocab_index(os.path.join(REAL, "vocab_index.txt"))
    photo_tags = [harrison.parse_tags(line) for line in tag_lines]
    with_file = vocabulary.choose(photo_tags, listed=listed)
    assert with_file.tags == listed and with_file.cut == {}
    # The lists as an uncurated table would give them: the same 997 tags.
    built = vocabulary.choose(photo_tags)
    assert len(built.tags) == 997 and set(built.tags) == set(listed) and built.cut == {}
    assert built.tags[:3] == listed[:3] == ["love", "friend", "beach"]
    assert min(built.photos.values()) == vocabulary.DEFAULT_MIN_PHOTOS  # the rarest: 2 photos
    assert len(vocabulary.choose(photo_tags, min_photos=3).tags) == 996
