"""The files evaluate.py writes, and the table it prints.

Every file is written to a temporary name in the same directory and moved into place with
os.replace, so an interrupted run never leaves a half-written file under the real name and a
rerun replaces each file whole.
"""
import csv
import json
import math

import numpy as np

from data.atomic import atomic_path, write_text
from evaluation import metrics

# The paper's best baseline (Park, Li and Kim 2016, Table 2: VGG-16 object + scene features and a
# multi-label classifier), as fractions like our metrics.
PAPER_BASELINE_NAME = "VGG-Object+Scene"
PAPER_BASELINE = {"precision@1": 0.3016, "recall@5": 0.2138, "accuracy@5": 0.5252}
# The three numbers the paper reports, in the order it reports them (plot and table highlight).
HEADLINE = ("precision@1", "recall@5", "accuracy@5")

PREDICTIONS_SHOWN = 10   # predicted tags per image in predictions.csv
PER_TAG_DECISION_K = 5   # per_tag.csv: an image "predicts" a tag when it is in its top 5


def write_csv(path, header, rows):
    with atomic_path(path) as temporary:
        with open(temporary, "w", encoding="utf-8", newline="") as stream:
            writer = csv.writer(stream)
            writer.writerow(header)
            writer.writerows(rows)


def _json_number(value):
    # NaN (e.g. label_map when no tag has a positive) is not valid JSON: write null.
    return None if isinstance(value, float) and math.isnan(value) else value


def metrics_document(checkpoint, global_step, split, num_images, model, popularity, variant):
    """The metrics.json content: model and popularity hold the same metric keys, as fractions;
    variant: the test-time variant scored (nets/variants.to_record)."""
    return {
        "checkpoint": checkpoint,
        "global_step": int(global_step),
        "split": split,
        "num_images": int(num_images),
        "variant": variant,
        "model": {key: _json_number(value) for key, value in model.items()},
        "popularity": {key: _json_number(value) for key, value in popularity.items()},
    }


def write_metrics_json(path, document):
    write_text(path, json.dumps(document, indent=2) + "\n")


def _format_score(value):
    return f"{value:.6f}"


def write_predictions_csv(path, image_paths, labels, scores, vocab, ranking=None):
    """path, true_tags (space separated), then predicted_1, score_1 ... predicted_10, score_10."""
    scores = np.asarray(scores)
    ranking = metrics.rank_tags(scores) if ranking is None else ranking
    shown = min(PREDICTIONS_SHOWN, scores.shape[1])
    header = ["path", "true_tags"]
    for rank in range(1, shown + 1):
        header += [f"predicted_{rank}", f"score_{rank}"]
    rows = []
    for row, image_path in enumerate(image_paths):
        truth = " ".join(vocab[tag] for tag in np.flatnonzero(labels[row]))
        cells = [image_path, truth]
        for tag in ranking[row, :shown]:
            cells += [vocab[tag], _format_score(scores[row, tag])]
        rows.append(cells)
    write_csv(path, header, rows)


def write_per_tag_csv(path, labels, scores, vocab, k=PER_TAG_DECISION_K):
    """One row per tag (vocab order): support, AP and precision/recall at the top-k decision.

    Empty cells where a value is undefined (AP and recall of a tag with no positive image,
    precision of a tag never predicted).
    """
    stats = metrics.per_tag_at_k(scores, labels, k=k)

    def cell(value):
        return "" if math.isnan(value) else _format_score(value)

    rows = [[tag, tag_id, stats["support"][tag_id], cell(stats["average_precision"][tag_id]),
             stats["predicted"][tag_id], stats["correct"][tag_id],
             cell(stats["precision"][tag_id]), cell(stats["recall"][tag_id])]
            for tag_id, tag in enumerate(vocab)]
    write_csv(path, ["tag", "id", "support", "average_precision", f"predicted@{k}",
                     f"correct@{k}", f"precision@{k}", f"recall@{k}"], rows)


def _percent(value):
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) \
        else f"{100 * value:6.2f}"


def format_table(model, popularity, top_k):
    """The comparison printed to the terminal: percent, the paper's three numbers first."""
    keys = list(HEADLINE) + [f"{name}@{k}" for k in top_k for name in metrics.PER_IMAGE_METRICS]
    keys += ["map", "label_map"] + [f"micro_recall@{k}" for k in top_k]
    keys = [key for i, key in enumerate(keys) if key in model and key not in keys[:i]]
    paper = f"paper {PAPER_BASELINE_NAME}"
    lines = [f"{'metric (%)':<16}{'model':>10}{'popularity':>12}{paper:>26}"]
    for key in keys:
        lines.append(f"{key:<16}{_percent(model[key]):>10}{_percent(popularity.get(key)):>12}"
                     f"{_percent(PAPER_BASELINE.get(key)):>26}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- contact sheet

def _fonts(size):
    from PIL import ImageFont
    try:
        # matplotlib (a requirement) ships DejaVu, which has the check mark glyph.
        from matplotlib import font_manager
        regular = font_manager.findfont("DejaVu Sans", fallback_to_default=False)
        bold = font_manager.findfont("DejaVu Sans:bold", fallback_to_default=False)
        return ImageFont.truetype(regular, size), ImageFont.truetype(bold, size), "\u2713"
    except Exception:  # pragma: no cover - a font-less install still gets a readable sheet
        font = ImageFont.load_default()
        return font, font, "+"


def to_uint8_image(image):
    """A model input in [-1, 1] (float [S, S, 3]) back to uint8 RGB for display."""
    image = np.asarray(image, dtype=np.float32)
    return np.clip(np.round((image + 1.0) * 127.5), 0, 255).astype(np.uint8)


def write_contact_sheet(path, images, image_paths, true_tags, predictions, title, k=5,
                        columns=3, thumb=224):
    """A grid of cards: the image, then "predicted" (top-k tags with scores) beside "user tags".

    images: uint8 [S, S, 3] arrays; true_tags: list of tag lists; predictions: list of
    [(tag, score), ...] in rank order (the first k are shown). A predicted tag the user also
    wrote is green, bold and checked, in both columns.
    """
    from PIL import Image, ImageDraw
    title_font = _fonts(20)[1]
    line = 20
    max_true = max([len(tags) for tags in true_tags] + [k])
    card = (max(2 * thumb, 460), thumb + 30 + line * (max_true + 1) + 14)  # width, height
    rows = max(1, math.ceil(len(images) / columns))
    header = 50
    sheet = Image.new("RGB", (columns * card[0] + (columns + 1) * 12,
                              header + rows * (card[1] + 12)), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((12, 12), title, fill=(25, 25, 25), font=title_font)
    for index, (image, image_path, truth, predicted) in enumerate(
            zip(images, image_paths, true_tags, predictions)):
        left = 12 + (index % columns) * (card[0] + 12)
        top = header + (index // columns) * (card[1] + 12)
        draw.rectangle([left, top, left + card[0] - 1, top + card[1] - 1],
                       outline=(200, 200, 200))
        picture = Image.fromarray(image).resize((thumb, thumb), Image.BILINEAR)
        sheet.paste(picture, (left + (card[0] - thumb) // 2, top + 6))
        _draw_card_text(draw, left, top + thumb + 10, card[0], image_path, truth,
                        predicted[:k], k, line)
    with atomic_path(path) as temporary:
        sheet.save(temporary, format="PNG")


def _draw_card_text(draw, left, y, width, image_path, truth, top_k, k, line):
    """A card's text: the image's path, then its top-k tags beside the user's, hits in green."""
    font, bold, check = _fonts(15)
    small, _, _ = _fonts(12)
    green, grey, ink = (20, 130, 40), (110, 110, 110), (25, 25, 25)
    name = image_path if len(image_path) <= 60 else "..." + image_path[-57:]
    draw.text((left + 8, y), name, fill=grey, font=small)
    hits = {tag for tag, _ in top_k} & set(truth)
    y += line
    column = width // 2
    draw.text((left + 8, y), f"predicted (top {k})", fill=ink, font=bold)
    draw.text((left + column, y), f"user tags ({len(hits)}/{len(truth)} found)", fill=ink,
              font=bold)
    for row, (tag, score) in enumerate(top_k, start=1):
        hit = tag in hits
        draw.text((left + 8, y + row * line), f"{check if hit else ' '} #{tag}  {score:.2f}",
                  fill=green if hit else ink, font=bold if hit else font)
    for row, tag in enumerate(truth, start=1):
        hit = tag in hits
        draw.text((left + column, y + row * line), f"{check if hit else ' '} #{tag}",
                  fill=green if hit else ink, font=bold if hit else font)


# ----------------------------------------------------------------------------- by step

def write_metrics_by_step_csv(path, documents):
    """One row per evaluated checkpoint (step order): step, checkpoint, model metrics, then the
    popularity baseline's metrics prefixed `popularity/`."""
    documents = sorted(documents, key=lambda document: document["global_step"])
    model_keys = list(documents[0]["model"])
    header = ["global_step", "checkpoint", "num_images"] + model_keys + [
        f"popularity/{key}" for key in model_keys]

    def cell(value):
        return "" if value is None else _format_score(value)

    rows = [[document["global_step"], document["checkpoint"], document["num_images"]]
            + [cell(document["model"][key]) for key in model_keys]
            + [cell(document["popularity"].get(key)) for key in model_keys]
            for document in documents]
    write_csv(path, header, rows)


def plot_metrics_by_step(path, documents, title):
    """P@1, R@5 and A@5 against step (solid), the popularity baseline (dashed) and the paper's
    numbers (dotted), one colour per metric."""
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot

    documents = sorted(documents, key=lambda document: document["global_step"])
    steps = [document["global_step"] for document in documents]
    figure, axes = pyplot.subplots(figsize=(8, 5), dpi=110)
    labels = {"precision@1": "P@1", "recall@5": "R@5", "accuracy@5": "A@5"}
    for key, colour in zip(HEADLINE, ("tab:blue", "tab:orange", "tab:green")):
        values = [100 * document["model"][key] for document in documents]
        axes.plot(steps, values, marker="o", color=colour, label=f"{labels[key]} model")
        popularity = documents[-1]["popularity"][key]
        axes.axhline(100 * popularity, color=colour, linestyle="--", linewidth=1,
                     label=f"{labels[key]} popularity")
        axes.axhline(100 * PAPER_BASELINE[key], color=colour, linestyle=":", linewidth=1,
                     label=f"{labels[key]} paper {PAPER_BASELINE_NAME}")
    axes.set_xlabel("global step")
    axes.set_ylabel("percent")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.13))
    figure.tight_layout()
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png")
    pyplot.close(figure)
