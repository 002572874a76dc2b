"""evaluation.report: the files evaluate.py writes, read back as a user would."""
import csv
import json
import os

import numpy as np
import pytest
from PIL import Image

from evaluation import metrics, report

VOCAB = ["love", "sunset", "beach", "food"]
SCORES = np.array([[0.1, 0.9, 0.7, 0.2],
                   [0.3, 0.2, 0.1, 0.8]], dtype=np.float32)
LABELS = np.array([[0, 1, 0, 1],
                   [1, 0, 0, 0]], dtype=bool)
PATHS = ["instagram_dataset/sunset/image_1.jpg", "instagram_dataset/food/image_7.jpg"]


def read_csv(path):
    with open(path, encoding="utf-8", newline="") as stream:
        return list(csv.DictReader(stream))


def test_metrics_json_has_the_documented_keys_and_fractions(tmp_path):
    model = metrics.evaluate(SCORES, LABELS, (1, 3))
    popularity = metrics.evaluate(metrics.popularity_scores([5, 1, 1, 2], 2), LABELS, (1, 3))
    path = tmp_path / "eval" / "metrics.json"
    report.write_metrics_json(str(path), report.metrics_document(
        "work/train/model.ckpt-20", 20, "test", 2, model, popularity,
        {"weights": "averaged", "image_size": 342, "mirror": True}))
    document = json.loads(path.read_text())
    assert sorted(document) == ["checkpoint", "global_step", "model", "num_images",
                                "popularity", "split", "variant"]
    assert document["variant"] == {"weights": "averaged", "image_size": 342, "mirror": True}
    assert document["global_step"] == 20 and document["num_images"] == 2
    expected = {f"{name}@{k}" for name in ("precision", "recall", "accuracy", "f1",
                                           "micro_recall") for k in (1, 3)} | {"map", "label_map"}
    assert set(document["model"]) == expected == set(document["popularity"])
    assert all(0.0 <= value <= 1.0 for value in document["model"].values())
    assert document["model"]["precision@1"] == pytest.approx(0.5)   # sunset hit, food miss
    assert document["popularity"]["precision@1"] == pytest.approx(0.5)  # love, love
    assert os.listdir(path.parent) == ["metrics.json"]  # no temporary file left behind


def test_predictions_csv_lists_truth_and_ranked_predictions_with_scores(tmp_path):
    path = tmp_path / "predictions.csv"
    report.write_predictions_csv(str(path), PATHS, LABELS, SCORES, VOCAB)
    rows = read_csv(path)
    assert [row["path"] for row in rows] == PATHS
    assert rows[0]["true_tags"] == "sunset food"
    # Only 4 tags in the vocabulary: 4 predictions, not 10.
    assert [rows[0][f"predicted_{rank}"] for rank in range(1, 5)] == ["sunset", "beach", "food",
                                                                      "love"]
    assert "predicted_5" not in rows[0]
    assert float(rows[1]["score_1"]) == pytest.approx(0.8)


def test_per_tag_csv_has_support_ap_and_top5_precision_recall(tmp_path):
    path = tmp_path / "per_tag.csv"
    report.write_per_tag_csv(str(path), LABELS, SCORES, VOCAB, k=1)
    rows = {row["tag"]: row for row in read_csv(path)}
    assert list(rows) == VOCAB
    # Top 1: image 0 -> sunset (hit), image 1 -> food (miss).
    assert rows["sunset"]["support"] == "1" and float(rows["sunset"]["precision@1"]) == 1.0
    assert float(rows["food"]["precision@1"]) == 0.0 and float(rows["food"]["recall@1"]) == 0.0
    assert rows["beach"]["average_precision"] == "" and rows["beach"]["precision@1"] == ""
    # love: image 1 ranks first by love's score (0.3 > 0.1) -> AP 1.
    assert float(rows["love"]["average_precision"]) == pytest.approx(1.0)


def test_contact_sheet_is_a_png_grid_of_the_images(tmp_path):
    path = tmp_path / "contact_sheet.png"
    images = [np.full((32, 32, 3), value, dtype=np.uint8) for value in (0, 255)]
    predictions = [[(VOCAB[tag], float(SCORES[row, tag])) for tag in metrics.rank_tags(SCORES)[row]]
                   for row in range(2)]
    report.write_contact_sheet(str(path), images, PATHS, [["sunset", "food"], ["love"]],
                               predictions, "title", columns=2, thumb=64)
    sheet = Image.open(path)
    assert sheet.format == "PNG" and sheet.mode == "RGB"
    assert sheet.width > 2 * 64
    pixels = np.asarray(sheet)
    assert (pixels == 0).all(axis=2).any()  # the black test image is pasted
    # A hit (sunset in image 0's top 5) is drawn in the hit colour.
    assert ((pixels[..., 1] > 100) & (pixels[..., 0] < 60) & (pixels[..., 2] < 80)).any()


def test_to_uint8_image_inverts_the_model_range():
    image = np.array([[[-1.0, 0.0, 1.0]]], dtype=np.float32)
    assert report.to_uint8_image(image).tolist() == [[[0, 128, 255]]]


def test_metrics_by_step_csv_and_plot_in_step_order(tmp_path):
    documents = [report.metrics_document(f"ckpt-{step}", step, "test", 2,
                                         {"precision@1": p, "recall@5": 0.1, "accuracy@5": 0.3},
                                         {"precision@1": 0.2, "recall@5": 0.1, "accuracy@5": 0.3},
                                         None)
                 for step, p in ((30, 0.5), (10, 0.25))]
    report.write_metrics_by_step_csv(str(tmp_path / "by_step.csv"), documents)
    rows = read_csv(tmp_path / "by_step.csv")
    assert [row["global_step"] for row in rows] == ["10", "30"]
    assert float(rows[1]["precision@1"]) == 0.5
    assert float(rows[1]["popularity/precision@1"]) == 0.2
    report.plot_metrics_by_step(str(tmp_path / "by_step.png"), documents, "run")
    assert Image.open(tmp_path / "by_step.png").format == "PNG"


def test_table_puts_the_paper_numbers_beside_the_model_in_percent():
    model = {"precision@1": 0.5, "recall@5": 0.25, "accuracy@5": 0.75, "map": 0.4}
    table = report.format_table(model, dict(model, map=0.1), (1, 5))
    lines = table.splitlines()
    assert lines[1].split() == ["precision@1", "50.00", "50.00", "30.16"]
    assert lines[2].split() == ["recall@5", "25.00", "25.00", "21.38"]
    assert lines[3].split() == ["accuracy@5", "75.00", "75.00", "52.52"]
    assert lines[4].split() == ["map", "40.00", "10.00"]
