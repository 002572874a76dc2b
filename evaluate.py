"""Scores a split of the records with a trained checkpoint: the HARRISON paper's metrics, the
popularity baseline, and files to open, plot and share.

    python3 evaluate.py --records_dir=work/records --checkpoint_path=work/train
    python3 evaluate.py --checkpoint_path=work/train/model.ckpt-2000      # one named checkpoint
    python3 evaluate.py --checkpoint_path=work/train --all_checkpoints    # every kept checkpoint

Writes to --eval_dir (default <train_dir>/eval): metrics.json, predictions.csv, per_tag.csv and
contact_sheet.png; with --all_checkpoints one step-<N>/ folder of those per checkpoint, plus
metrics_by_step.csv and metrics_by_step.png.
"""
import os
import sys

from absl import app, flags, logging

from data import harrison, input as data_input
from evaluation import inference, metrics, report
from nets import tagging

FLAGS = flags.FLAGS
flags.DEFINE_string("checkpoint_path", "work/train",
                    "A train_dir (its latest checkpoint is used) or one checkpoint prefix such as "
                    "work/train/model.ckpt-2000.")
flags.DEFINE_string("records_dir", None,
                    "preprocess.py's output directory. Default: the records_dir the model was "
                    "trained on (train_config.json).")
flags.DEFINE_string("split", "test", "Which split of the records to score (test, val, train).")
flags.DEFINE_list("top_k", ["1", "3", "5", "10"], "The k of precision/recall/accuracy/f1@k.")
flags.DEFINE_integer("batch_size", 32, "Images per inference batch (any size: the last partial "
                     "batch is scored too).")
flags.DEFINE_string("eval_dir", None, "Where to write the results. Default: <train_dir>/eval.")
flags.DEFINE_bool("all_checkpoints", False,
                  "Evaluate every checkpoint listed in the train_dir's `checkpoint` file, in step "
                  "order, and plot the metrics against step.")
flags.DEFINE_integer("contact_sheet_images", 12, "Test images shown in contact_sheet.png "
                     "(the first ones of the split; 0 skips the sheet).")


def fail(message):
    print(f"evaluate.py: error: {message}", file=sys.stderr)
    sys.exit(2)


def write_outputs(directory, document, scored, vocab, title):
    ranking = metrics.rank_tags(scored["scores"])
    metrics_path = os.path.join(directory, "metrics.json")
    if os.path.exists(metrics_path):
        os.remove(metrics_path)  # written again last, once the files beside it are this run's
    report.write_predictions_csv(os.path.join(directory, "predictions.csv"), scored["paths"],
                                 scored["labels"], scored["scores"], vocab, ranking)
    report.write_per_tag_csv(os.path.join(directory, "per_tag.csv"), scored["labels"],
                             scored["scores"], vocab)
    shown = len(scored["images"])
    sheet = os.path.join(directory, "contact_sheet.png")
    if not shown and os.path.exists(sheet):
        os.remove(sheet)  # a sheet of an earlier run must not pass for this run's
    if shown:
        report.write_contact_sheet(
            sheet,
            [report.to_uint8_image(image) for image in scored["images"]],
            scored["paths"][:shown],
            [[vocab[tag] for tag in row.nonzero()[0]] for row in scored["labels"][:shown]],
            [[(vocab[tag], float(scored["scores"][row, tag])) for tag in ranking[row, :10]]
             for row in range(shown)],
            title)
    report.write_metrics_json(metrics_path, document)


def evaluate_checkpoint(scorer, checkpoint, train_counts, vocab, top_k, directory):
    """Scores the split with one checkpoint, prints the table, writes the files; the metrics."""
    step = inference.checkpoint_step(checkpoint)
    scored = scorer.score(checkpoint, keep_images=max(FLAGS.contact_sheet_images, 0))
    model, popularity = inference.evaluate_scored(scored, train_counts, top_k)
    document = report.metrics_document(checkpoint, step, FLAGS.split, len(scored["paths"]),
                                       model, popularity)
    write_outputs(directory, document, scored, vocab,
                  f"{os.path.basename(checkpoint)} on {FLAGS.split}: predicted vs user tags "
                  "(hits in green)")
    print(f"\n{checkpoint} (step {step}), {FLAGS.split} split, {len(scored['paths'])} images:")
    untagged = len(scored["paths"]) - metrics.images_with_tags(scored["labels"])
    if untagged:
        print(f"({untagged} images without any tag of the vocabulary are left out of the "
              "per-image averages)")
    print(report.format_table(model, popularity, top_k))
    print(f"wrote {directory}")
    return document


def main(argv):
    if len(argv) > 1:
        fail(f"unexpected arguments: {' '.join(argv[1:])}")
    try:
        top_k = sorted({int(k) for k in FLAGS.top_k})
    except ValueError:
        fail(f"--top_k must be integers, got {','.join(FLAGS.top_k)}")
    if not top_k or top_k[0] < 1:
        fail("--top_k values must be >= 1")
    if FLAGS.batch_size < 1:
        fail("--batch_size must be >= 1")
    if not FLAGS["verbosity"].present:  # TensorFlow's INFO lines ("Restoring parameters ...")
        logging.set_verbosity(logging.WARNING)

    try:
        checkpoint, train_dir = tagging.resolve_checkpoint(FLAGS.checkpoint_path)
        config, vocab = tagging.load_train_dir(train_dir)
        records_dir = FLAGS.records_dir or config.get("records_dir")
        if not records_dir:
            fail("--records_dir is required (train_config.json does not name one)")
        inference.check_vocab(records_dir, harrison.load_records_vocab(records_dir),
                              train_dir, vocab)
        checkpoints = (inference.all_checkpoints(train_dir) if FLAGS.all_checkpoints
                       else [checkpoint])
        eval_dir = FLAGS.eval_dir or os.path.join(train_dir, "eval")
        train_counts = inference.train_tag_counts(records_dir, vocab)
        by_step = [os.path.join(eval_dir, name)
                   for name in ("metrics_by_step.csv", "metrics_by_step.png")]
        for path in by_step if FLAGS.all_checkpoints else []:
            if os.path.exists(path):
                os.remove(path)  # rewritten at the end from this run's checkpoints only
        scorer = inference.Scorer(config, records_dir, FLAGS.split, FLAGS.batch_size)
        try:
            documents = []
            for checkpoint in checkpoints:
                step = inference.checkpoint_step(checkpoint)
                directory = (os.path.join(eval_dir, f"step-{step}") if FLAGS.all_checkpoints
                             else eval_dir)
                documents.append(evaluate_checkpoint(scorer, checkpoint, train_counts, vocab,
                                                     top_k, directory))
        finally:
            scorer.close()
        if FLAGS.all_checkpoints:
            report.write_metrics_by_step_csv(by_step[0], documents)
            report.plot_metrics_by_step(by_step[1], documents, f"{train_dir} on {FLAGS.split}")
            print(f"wrote {by_step[0]} and {by_step[1]}")
    except (harrison.FormatError, data_input.InputError, inference.EvaluationError,
            tagging.TrainDirError) as error:
        fail(str(error))


if __name__ == "__main__":
    app.run(main)
