"""Hashtags as people write them -> one spelling per tag, and the vocabulary rules.

- `normalize_tag`: Unicode NFC, case-folded, leading `#` dropped, inner whitespace collapsed:
  `#Café`, `café` and `CAFE\u0301` are one tag, `New  York` is `new york`.
- `hashtags`: the `#hashtags` of a caption as Instagram links them: any script, any case; a tag
  runs over letters, marks, digits and `_`; a `#` inside a word is not a tag (`C#`, `a#b`), nor
  is one without a letter (`#1`), an HTML entity (`&#39;`) or a link's anchor (`site.com/#top`).
- `tags_of_cell`: a table's tags cell: comma- (or semicolon-) separated when it has any, else
  whitespace-separated (`sunset, new york` or `#sunset #beach`).
- `choose`: the vocabulary of the photos' tags: tags on fewer than `min_photos` photos are cut,
  then all but the `max_size` most frequent. Without a vocabulary file the order is by photo
  count, then by tag; with one (HARRISON's vocab_index.txt) its order is kept and its other
  tags are cut.

The defaults keep HARRISON's 997 tags on the real lists (its rarest tag is on 2 photos).
Pure Python, no TensorFlow.
"""
import collections
import re
import unicodedata

DEFAULT_MIN_PHOTOS = 2  # a tag on one photo lands in one split: never both learned and scored
DEFAULT_MAX_SIZE = 1000  # the paper's "1,000 hashtags"
HASH_SIGNS = "#\uff03"  # and the full-width one of Japanese and Chinese keyboards
_JOINERS = "\u200c\u200d"  # zero-width (non-)joiner: part of words in Persian and Indic scripts
_HASH = re.compile(f"[{HASH_SIGNS}]")
_LIST_SEPARATORS = re.compile(r"[,;]")


def normalize_tag(tag):
    """The one spelling of a tag ('' when nothing is left)."""
    tag = unicodedata.normalize("NFC", unicodedata.normalize("NFC", tag).casefold())
    return " ".join(tag.lstrip().lstrip(HASH_SIGNS).split())


def _in_tag(char):
    return char == "_" or char in _JOINERS or unicodedata.category(char)[0] in "LMN"


def hashtags(caption):
    """The caption's hashtags (without `#`, as written), in order, repeats included."""
    found = []
    for match in _HASH.finditer(caption):
        start = before = match.start()
        while before and unicodedata.category(caption[before - 1])[0] == "M":
            before -= 1  # marks belong to the character before them (❤️ is ❤ + a selector)
        if before and (_in_tag(caption[before - 1]) or caption[before - 1] in "&/"):
            continue  # inside a word (C#, a#b), an HTML entity (&#39;), a link (site.com/#top)
        end = start + 1
        while end < len(caption) and _in_tag(caption[end]):
            end += 1
        body = caption[start + 1:end]
        if any(unicodedata.category(char)[0] == "L" for char in body):
            found.append(body)
    return found


def tags_of_cell(cell):
    """The tags written in one table cell, as written."""
    if _LIST_SEPARATORS.search(cell):
        return _LIST_SEPARATORS.split(cell)
    return cell.split()


def unique_tags(raw_tags):
    """Normalized tags, in order, without repeats or empty ones."""
    return list(dict.fromkeys(tag for tag in map(normalize_tag, raw_tags) if tag))


class Vocabulary:
    """The chosen tags (`tags`, the index is the id), how many photos carry each tag seen
    (`photos`), and why each tag left out was cut (`cut`: tag -> reason)."""

    def __init__(self, tags, photos, cut):
        self.tags, self.photos, self.cut = tags, photos, cut

    def with_cut_tags(self, stats):
        """tag_stats.csv's table (`stats`: tag, id and a count column per split, a row per
        kept tag) with what was cut: when a tag was, the columns `photos` (how many usable
        photos carry it) and `cut` (why it was cut, empty for kept tags) and a row per cut tag,
        the most frequent first. When none was, `stats` as it is, as before the rules existed."""
        if not self.cut:
            return stats
        import pandas as pd

        stats = stats.assign(photos=[self.photos[tag] for tag in stats["tag"]], cut="")
        rows = sorted(self.cut.items(), key=lambda item: (-self.photos[item[0]], item[0]))
        cut = pd.DataFrame({"tag": [tag for tag, _ in rows],
                            "photos": [self.photos[tag] for tag, _ in rows],
                            "cut": [reason for _, reason in rows]})
        table = pd.concat([stats, cut], ignore_index=True)
        counts = [column for column in stats.columns if column not in ("tag", "cut")]
        return table.astype({column: "Int64" for column in counts})


def choose(photo_tags, min_photos=DEFAULT_MIN_PHOTOS, max_size=DEFAULT_MAX_SIZE, listed=None):
    """The Vocabulary of `photo_tags` (one list of normalized tags per photo, no repeats).

    `listed`: a fixed vocabulary (in its order; tags outside it are cut), or None to build one
    from the photos' tags, the most frequent first.
    """
    photos = collections.Counter(tag for tags in photo_tags for tag in tags)
    cut = {}
    if listed is None:
        candidates = sorted(photos, key=lambda tag: (-photos[tag], tag))
    else:
        candidates = list(listed)
        for tag in photos.keys() - set(listed):
            cut[tag] = "not in the vocabulary file"
        for tag in listed:
            photos.setdefault(tag, 0)
    kept = []
    for tag in candidates:
        if photos[tag] < min_photos:
            cut[tag] = f"on fewer than {min_photos} photos (--min_tag_photos)"
        else:
            kept.append(tag)
    if len(kept) > max_size:
        position = {tag: index for index, tag in enumerate(kept)}
        by_count = sorted(kept, key=lambda tag: (-photos[tag], position[tag]))
        for tag in by_count[max_size:]:
            cut[tag] = f"not among the {max_size} most frequent (--max_vocab)"
        kept = [tag for tag in kept if tag not in cut]
    return Vocabulary(kept, photos, cut)
