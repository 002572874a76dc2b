#!/usr/bin/env bash
# The one-line demo on the built-in sample, a few minutes on 2 CPU cores:
#
#     pip install -r requirements.txt && bash demo.sh
#
# builds the sample dataset and its records (preprocess.py --sample), trains the CPU recipe
# (train.py --preset=cpu), tags two test images the model never saw (predict.py), then scores
# the test split (evaluate.py): it ends with the metrics table (model vs popularity baseline)
# and the path of the contact sheet. Outputs go to work/ (the scripts' defaults), so afterwards
# `"$python" predict.py my_photo.jpg` and `"$python" evaluate.py` work without flags. Re-running
# resumes: the records are rebuilt identically and a finished training is not repeated.
#
# Settings for quick checks (the tests use the smallest ones):
#   DEMO_WORK_DIR          where sample/, records/ and train/ go (default: work)
#   DEMO_PREPROCESS_FLAGS  extra preprocess.py flags, e.g. "--sample_images=100"
#   DEMO_TRAIN_FLAGS       extra train.py flags, e.g. "--max_steps=50"
#   PYTHON                 the interpreter (default: python3)
set -euo pipefail
cd "$(dirname "$0")"
work="${DEMO_WORK_DIR:-work}"
records="$work/records"
train="$work/train"
python="${PYTHON:-python3}"

step() { printf '\n== %s\n' "$*"; }

step "1/4 build the sample dataset and its records"
# shellcheck disable=SC2086  # the flag lists are meant to split into words
"$python" preprocess.py --sample --sample_dir="$work/sample" --records_dir="$records" \
    ${DEMO_PREPROCESS_FLAGS:-}

step "2/4 train the CPU recipe"
# shellcheck disable=SC2086
"$python" train.py --preset=cpu --records_dir="$records" --train_dir="$train" ${DEMO_TRAIN_FLAGS:-}

step "3/4 tag two test images"
mapfile -t photos < <("$python" - "$records" <<'EOF'
import csv, json, os, sys
records = sys.argv[1]
with open(os.path.join(records, "manifest.json"), encoding="utf-8") as stream:
    dataset_dir = json.load(stream)["dataset_dir"]
with open(os.path.join(records, "split.csv"), encoding="utf-8", newline="") as stream:
    test = [row["path"] for row in csv.DictReader(stream) if row["split"] == "test"]
for path in test[:2]:
    path = os.path.join(dataset_dir, path)
    print(path if os.path.relpath(path).startswith("..") else os.path.relpath(path))
EOF
)
"$python" predict.py --model="$train" "${photos[@]}"

step "4/4 evaluate on the test split"
"$python" evaluate.py --model="$train" --records_dir="$records"
echo "contact sheet: $train/eval/contact_sheet.png"
