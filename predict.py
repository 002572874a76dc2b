"""Tags your photos with a trained model: the top hashtags of each image and their scores.

    python3 predict.py --checkpoint_path=work/train photo1.jpg photo2.png some_folder/
    python3 predict.py --top_k=0 --threshold=0.3 --format=json photos/ > tags.jsonl

Arguments are image files or folders (the image files directly inside, sorted; --recursive
also walks subfolders). Images are scored in batches with evaluate.py's eval preprocessing
(nets/tagger.py, the same graph export.py saves). Output, one line per image on stdout:

    text  photos/beach.jpg: #sunset 0.91 #beach 0.84 ...
    json  {"path": "photos/beach.jpg", "tags": ["sunset", "beach"], "scores": [0.91, 0.84]}
    csv   path,tags,scores  (tags and scores space-separated, best first)

A file that is missing or not an image gets `<path>: error: <reason>` on stderr and the others
go on. Exit code: 0 all tagged, 1 some failed, 2 nothing could run (bad flags, no model).
"""
import csv
import json
import os
import sys

from absl import app, flags, logging
from tqdm import tqdm

FLAGS = flags.FLAGS
flags.DEFINE_string("checkpoint_path", "work/train",
                    "A train_dir of train.py (its latest checkpoint is used) or one checkpoint "
                    "prefix such as work/train/model.ckpt-2000.")
flags.DEFINE_integer("top_k", 5, "Tags shown per image, best first (0: every tag of the "
                     "vocabulary, useful with --threshold).")
flags.DEFINE_float("threshold", None, "Only show the tags (of the top --top_k) whose score is "
                   "at least this. Scores are per-tag probabilities in [0, 1] (a softmax over "
                   "the tags for models trained with --loss=softmax).")
flags.DEFINE_enum("format", "text", ["text", "json", "csv"], "text: `path: #tag score ...`; "
                  "json: one JSON object per line (path, tags, scores); csv: path,tags,scores.")
flags.DEFINE_integer("batch_size", 32, "Images per inference batch.")
flags.DEFINE_bool("recursive", False, "For folder arguments, also tag the images in their "
                  "subfolders.")


def fail(message):
    print(f"predict.py: error: {message}", file=sys.stderr)
    sys.exit(2)


class Output:
    """Writes one image's result to stdout in --format, streaming (nothing held back)."""

    def __init__(self, fmt, stream=sys.stdout):
        self.format = fmt
        self.stream = stream
        self.csv = csv.writer(stream, lineterminator="\n") if fmt == "csv" else None
        if self.csv:
            self.csv.writerow(["path", "tags", "scores"])

    def write(self, path, tags, scores):
        if self.format == "text":
            shown = " ".join(f"#{tag} {score:.2f}" for tag, score in zip(tags, scores))
            self.stream.write(f"{path}: {shown or '(no tag above the threshold)'}\n")
        elif self.format == "json":
            self.stream.write(json.dumps({"path": path, "tags": list(tags),
                                          "scores": [float(score) for score in scores]},
                                         ensure_ascii=False) + "\n")
        else:
            self.csv.writerow([path, " ".join(tags), " ".join(f"{score:.6f}" for score in scores)])
        self.stream.flush()


def report_error(path, reason):
    sys.stdout.flush()  # keeps stdout and stderr lines in input order on a terminal
    print(f"{path}: error: {reason}", file=sys.stderr, flush=True)


def main(argv):
    arguments = argv[1:]
    if not arguments:
        fail("give image files or folders to tag, e.g. predict.py photo.jpg photos/")
    if FLAGS.top_k < 0:
        fail("--top_k must be >= 0 (0: every tag)")
    if FLAGS.batch_size < 1:
        fail("--batch_size must be >= 1")

    if not FLAGS["verbosity"].present:  # TensorFlow's INFO lines ("Restoring parameters ...")
        logging.set_verbosity(logging.WARNING)
    from data import photos
    from nets import tagger as tagger_lib
    from nets import tagging

    try:
        tagger = tagger_lib.Tagger(FLAGS.checkpoint_path, top_k=FLAGS.top_k)
    except (tagging.TrainDirError, tagger_lib.TaggerError, ValueError) as error:
        fail(str(error))
    entries = photos.expand(arguments, FLAGS.recursive)
    output = Output(FLAGS.format)
    failed = 0
    # A progress bar (rate, ETA) on a terminal when there is more than one batch; result and
    # error lines are written around it.
    progress = tqdm(total=len(entries), unit="img", desc="predict", file=sys.stderr,
                    dynamic_ncols=True, disable=None if len(entries) > FLAGS.batch_size else True)
    for start in range(0, len(entries), FLAGS.batch_size):
        chunk = entries[start:start + FLAGS.batch_size]
        loaded = {}  # position in chunk -> bytes; the others get their reason in `outcomes`
        outcomes = [error for _, error in chunk]
        for position, (path, error) in enumerate(chunk):
            if error is None:
                try:
                    loaded[position] = photos.load(path)
                except photos.PhotoError as photo_error:
                    outcomes[position] = str(photo_error)
        for position, result in zip(loaded, tagger.tag_each(list(loaded.values()))):
            outcomes[position] = result
        with tqdm.external_write_mode(file=sys.stdout):
            for (path, _), outcome in zip(chunk, outcomes):
                if isinstance(outcome, str):  # this file's one-line reason
                    report_error(path, outcome)
                    failed += 1
                    continue
                tags, scores = outcome
                if FLAGS.threshold is not None:
                    kept = [i for i, score in enumerate(scores) if score >= FLAGS.threshold]
                    tags, scores = [tags[i] for i in kept], [scores[i] for i in kept]
                output.write(path, tags, scores)
        progress.update(len(chunk))
    progress.close()
    tagger.close()
    if failed:
        tagged = len(entries) - failed
        print(f"predict.py: {failed} of {len(entries)} failed, {tagged} tagged", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    app.run(main)
