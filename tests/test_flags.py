"""Every numeric flag of every script is checked at parse time: a value out of range, NaN or of
the wrong kind is one line on stderr and exit code 2, before any work starts (issue 12)."""
import pytest

from conftest import assert_one_line_error, run_script
from script_flags import parse_argvs

BAD = {
    "train.py": ["--batch_size=0", "--batch_size=-4", "--summary_every_steps=0", "--image_size=1",
                 "--depth_multiplier=0", "--shuffle_buffer=0", "--max_steps=0", "--max_steps=-5",
                 "--save_every_steps=0", "--keep_checkpoints=0", "--learning_rate=nan",
                 "--learning_rate=-1", "--batch_norm_decay=1", "--dropout_keep_prob=0",
                 "--num_epochs=0", "--num_epochs=inf", "--save_every_minutes=0",
                 "--warmup_steps=-1", "--preset=fast", "--image_size=100000"],
    "preprocess.py": ["--shorter_side=100000", "--shorter_side=0", "--sample_images=0",
                      "--test_size=0", "--val_size=-1", "--shard_size=0", "--workers=0"],
    "evaluate.py": ["--batch_size=0", "--contact_sheet_images=-1"],
    "predict.py": ["--threshold=nan", "--threshold=1.5", "--top_k=-1", "--batch_size=0",
                   "--format=xml"],
    "export.py": ["--top_k=0"],
}


@pytest.mark.parametrize("script", sorted(BAD))
def test_bad_values_are_refused_by_the_flag_parser(script):
    outcomes = parse_argvs(script, [[script, value] for value in BAD[script]])
    accepted = [value for value, outcome in zip(BAD[script], outcomes) if outcome["ok"]]
    assert not accepted
    for value, outcome in zip(BAD[script], outcomes):
        assert "\n" not in outcome["error"].strip(), (value, outcome["error"])


@pytest.mark.parametrize("script, argument, says", [
    ("train.py", "--preset=fast", "value should be one of <cpu|gpu>"),
    ("predict.py", "--threshold=nan", "--threshold must be a score between 0 and 1"),
    ("preprocess.py", "--shorter_side=100000", "not an integer in the range [32, 2048]"),
])
def test_a_bad_flag_is_one_line_and_exit_code_2(script, argument, says):
    # A fresh interpreter: the scripts' one real start on this exit path (conftest.run_script).
    result = run_script(script, argument, "x.jpg" if script == "predict.py" else "--help=false",
                        fresh=True)
    assert_one_line_error(result, script, says)


def test_deprecated_names_still_work_with_a_warning(tmp_path):
    outcomes = parse_argvs("evaluate.py", [["evaluate.py", "--checkpoint_path=x", "--top_k=1,5"]])
    assert outcomes[0]["ok"] and outcomes[0]["deprecated"] == ["checkpoint_path", "top_k"]
    result = run_script("export.py", f"--checkpoint_path={tmp_path}", fresh=True)
    assert "--checkpoint_path is deprecated" in result.stderr and "use --model" in result.stderr
    assert result.returncode == 2  # then the usual one-line error: no checkpoint there
    assert result.stderr.strip().splitlines()[-1] == (f"export.py: error: no checkpoint in "
                                                      f"{tmp_path} (train.py writes "
                                                      "model.ckpt-<step>)")
