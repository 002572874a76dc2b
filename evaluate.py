"""Scores a split of the records with a trained model: the HARRISON paper's metrics, the
popularity baseline, and files to open, plot and share.

    python3 evaluate.py --model=work/train --records_dir=work/records
    python3 evaluate.py --model=work/train/model.ckpt-2000      # one named checkpoint
    python3 evaluate.py --model=work/train --all_checkpoints    # every kept checkpoint

Writes to --eval_dir (default <train_dir>/eval): metrics.json, predictions.csv, per_tag.csv and
contact_sheet.png; with --all_checkpoints one step-<N>/ folder of those per checkpoint, plus
metrics_by_step.csv and metrics_by_step.png.
"""
import os

from absl import flags

import cli
from data import harrison, pipeline
from evaluation import metrics, report, scoring
from nets import train_dir, variants

FLAGS = flags.FLAGS
flags.DEFINE_string("model", "work/train",
                    "A train_dir (its best checkpoint on the val split is used, else its newest) "
                    "or one checkpoint in it, such as work/train/model.ckpt-2000.")
flags.DEFINE_string("records_dir", None,
                    "preprocess.py's output directory. Default: the records_dir the model was "
                    "trained on (train_config.json).")
flags.DEFINE_string("split", "test", "Which split of the records to score (test, val, train).")
flags.DEFINE_list("at_k", ["1", "3", "5", "10"], "The k of precision/recall/accuracy/f1@k.")
flags.DEFINE_integer("batch_size", 32, "Images per inference batch (any size: the last partial "
                     "batch is scored too).", lower_bound=1, upper_bound=4096)
flags.DEFINE_string("eval_dir", None, "Where to write the results. Default: <train_dir>/eval.")
flags.DEFINE_bool("all_checkpoints", False,
                  "Evaluate every checkpoint in the train_dir, in step order, and plot the "
                  "metrics against step.")
flags.DEFINE_integer("contact_sheet_images", 12, "Test images shown in contact_sheet.png "
                     "(the first ones of the split; 0 skips the sheet).", lower_bound=0,
                     upper_bound=1000)
variants.define_flags()
cli.deprecated_alias("checkpoint_path", "model")
cli.deprecated_alias("top_k", "at_k")


def parse_at_k(values):
    try:
        at_k = sorted({int(k) for k in values})
    except ValueError:
        raise cli.UserError(f"--at_k must be integers, got {','.join(values)}") from None
    if not at_k or at_k[0] < 1:
        raise cli.UserError("--at_k values must be >= 1")
    return at_k


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


def evaluate_checkpoint(scorer, checkpoint, variant, train_counts, vocab, at_k, directory,
                        sheet_images):
    """Scores the split with one checkpoint in its test-time `variant` (`scorer` is built for
    it), prints the table, writes the files; the metrics."""
    step = train_dir.checkpoint_step(checkpoint)
    scored = scorer.score(checkpoint, keep_images=sheet_images,
                          averaged=variant.weights == "averaged")
    model, popularity = scoring.evaluate_scored(scored, train_counts, at_k)
    document = report.metrics_document(checkpoint, step, scorer.split, len(scored["paths"]),
                                       model, popularity, variants.to_record(variant))
    write_outputs(directory, document, scored, vocab,
                  f"{os.path.basename(checkpoint)} on {scorer.split}: predicted vs user tags "
                  "(hits in green)")
    print(f"\n{checkpoint} (step {step}), {scorer.split} split, {len(scored['paths'])} images, "
          f"{variants.describe(variant)}:")
    untagged = len(scored["paths"]) - metrics.images_with_tags(scored["labels"])
    if untagged:
        print(f"({untagged} images without any tag of the vocabulary are left out of the "
              "per-image averages)")
    print(report.format_table(model, popularity, at_k))
    print(f"wrote {directory}")
    return document


def main(argv):
    if len(argv) > 1:
        raise cli.UserError(f"unexpected arguments: {' '.join(argv[1:])}")
    at_k = parse_at_k(FLAGS.at_k)
    checkpoint, model_dir = train_dir.resolve(FLAGS.model)
    config, vocab = train_dir.load(model_dir)
    records_dir = FLAGS.records_dir or config.get("records_dir")
    if not records_dir:
        raise cli.UserError("--records_dir is required (train_config.json does not name one)")
    scoring.check_vocab(records_dir, harrison.load_records_vocab(records_dir), model_dir, vocab)
    scoring.check_unseen(records_dir, FLAGS.split, config)
    checkpoints = (train_dir.usable_checkpoints(model_dir) if FLAGS.all_checkpoints
                   else [checkpoint])
    eval_dir = FLAGS.eval_dir or os.path.join(model_dir, "eval")
    if os.path.exists(eval_dir) and not os.path.isdir(eval_dir):  # checked before the scoring
        raise cli.UserError(f"--eval_dir {eval_dir} is a file, not a folder")
    train_counts = pipeline.tag_counts(records_dir, vocab)
    by_step = [os.path.join(eval_dir, name)
               for name in ("metrics_by_step.csv", "metrics_by_step.png")]
    for path in by_step if FLAGS.all_checkpoints else []:
        if os.path.exists(path):
            os.remove(path)  # rewritten at the end from this run's checkpoints only
    scorers = {}  # by the input size and mirroring of the checkpoints' variants
    try:
        documents = []
        for checkpoint in checkpoints:
            if FLAGS.all_checkpoints:  # one variant for all: the curve compares checkpoints
                variant, why = variants.default(config), "as every checkpoint of --all_checkpoints"
            else:
                variant, why = variants.chosen(model_dir, checkpoint, config)
            variant = variants.from_flags(variant)
            if variants.overridden():
                why = "as the flags ask"
            print(f"{os.path.basename(checkpoint)}: {variants.describe(variant)}, {why}")
            key = (variant.image_size, variant.mirror)
            if key not in scorers:
                scorers[key] = scoring.Scorer(variants.scoring_config(config, variant),
                                              records_dir, FLAGS.split, FLAGS.batch_size)
            directory = (os.path.join(eval_dir, f"step-{train_dir.checkpoint_step(checkpoint)}")
                         if FLAGS.all_checkpoints else eval_dir)
            documents.append(evaluate_checkpoint(scorers[key], checkpoint, variant,
                                                 train_counts, vocab, at_k, directory,
                                                 FLAGS.contact_sheet_images))
    finally:
        for scorer in scorers.values():
            scorer.close()
    if FLAGS.all_checkpoints:
        report.write_metrics_by_step_csv(by_step[0], documents)
        report.plot_metrics_by_step(by_step[1], documents, f"{model_dir} on {FLAGS.split}")
        print(f"wrote {by_step[0]} and {by_step[1]}")


if __name__ == "__main__":
    cli.run(main)
