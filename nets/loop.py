"""The training loop's helpers (train.py runs the loop itself):
- `Checkpoints`: when to save, what was saved, which checkpoints the rotation may delete;
- `Speedometer`: training images/s for the progress bar and TensorBoard;
- `StopRequest`: Ctrl-C and SIGTERM finish the step under way, then stop.
"""
import os
import signal
import time

import tensorflow.compat.v1 as tf

import cli
from nets import train_dir


class Checkpoints:
    """When the loop saves, and what it saved. The saver's kept set starts from the checkpoints
    already in the train_dir, so --keep_checkpoints counts across resumes. Two are kept apart
    from it, never rotated away: the best on the val split (best.json) and model.ckpt-0, the
    linear probe's model when the run had one (its result, to evaluate on the test split)."""

    PROBE_STEP = 0

    def __init__(self, saver, session, directory):
        self.saver, self.session, self.directory = saver, session, directory
        existing = train_dir.list_checkpoints(directory)
        best = train_dir.best(directory)
        self.best = best["step"] if best else None
        saver.recover_last_checkpoints([train_dir.tf_path(prefix) for step, prefix in existing
                                        if step not in (self.best, self.PROBE_STEP)])
        self.last = existing[-1][0] if existing else None
        self.saved_at = time.time()

    def _rotate(self, drop=None, add=None):
        """The saver's rotation without the checkpoint of step `drop`, with the one of `add`."""
        paths = set(self.saver.last_checkpoints) - {train_dir.tf_path(self.prefix(drop))}
        if add is not None and os.path.isfile(self.prefix(add) + ".index"):
            paths.add(train_dir.tf_path(self.prefix(add)))
        self._set_rotation(paths)

    def _set_rotation(self, paths):
        """Makes `paths` the saver's rotation, in the order they were written (the saver
        deletes the oldest at its next save)."""
        self.saver.set_last_checkpoints_with_time(sorted(
            ((path, os.path.getmtime(path + ".index")) for path in paths), key=lambda p: p[1]))

    def keep_best(self, step):
        """Takes `step` out of the rotation (it is the new best) and gives the previous best
        back to it (unless that is the probe's, kept for good)."""
        previous, self.best = self.best, step
        self._rotate(drop=step, add=previous if previous != self.PROBE_STEP else None)

    def due(self, step, every_steps, every_minutes):
        return step != self.last and (step % every_steps == 0
                                      or time.time() - self.saved_at >= 60 * every_minutes)

    def save(self, step):
        """Saves `step` unless it is saved already; True when it wrote a checkpoint."""
        if step == self.last:
            return False
        self._drop_excess()
        try:
            prefix = os.path.join(self.directory, train_dir.CHECKPOINT_BASENAME)
            self.saver.save(self.session, train_dir.tf_path(prefix), global_step=step,
                            write_meta_graph=False)
        except (tf.errors.OpError, OSError) as error:  # a full disk is ResourceExhaustedError
            train_dir.remove_partial_checkpoints(self.directory)
            raise cli.UserError(f"cannot save step {step} in {self.directory}: "
                                f"{cli.first_line(error)}; {self.describe_last()}") from None
        self.last, self.saved_at = step, time.time()
        if step == self.PROBE_STEP:
            self._rotate(drop=step)
        return True

    def _drop_excess(self):
        """Deletes the oldest checkpoints of the rotation beyond --keep_checkpoints. The saver
        deletes one per save: after a resume that keeps fewer than the train_dir holds, the
        earlier runs' extra ones would outlive a short run (3 left by one save at 2 kept)."""
        keep, rotation = self.saver.saver_def.max_to_keep, self.saver.last_checkpoints
        if not keep or len(rotation) <= keep:
            return
        for path in rotation[:len(rotation) - keep]:
            train_dir.remove_checkpoint(path)
        self._set_rotation(rotation[-keep:])

    def prefix(self, step):
        return train_dir.checkpoint_prefix(self.directory, step)

    def describe_last(self):
        if self.last is None:
            return f"no checkpoint was written in {self.directory}"
        return f"the last checkpoint is {self.prefix(self.last)}"


class Speedometer:
    """Training images/s, over the steps since the last summary (the first step, which includes
    graph optimization, is not timed)."""

    def __init__(self, batch_size):
        self.batch_size, self.started, self.images, self.rate = batch_size, None, 0, None

    def tick(self):
        """Counts one step; returns the current rate (None until one is measured)."""
        if self.started is None:
            self.started = time.time()
            return None
        self.images += self.batch_size
        self.rate = self.images / max(time.time() - self.started, 1e-9)
        return self.rate

    def summary(self):
        """The rate as a TensorBoard summary; starts the next window."""
        event = tf.Summary(value=[tf.Summary.Value(tag="images_per_second",
                                                   simple_value=self.rate or 0.0)])
        self.started, self.images = time.time(), 0
        return event


class StopRequest:
    """While entered, the first SIGINT (Ctrl-C, a notebook's interrupt) or SIGTERM (what Colab
    and job schedulers send) only sets `requested`: the loop finishes its step, saves and stops.
    A second one interrupts at once."""

    SIGNALS = {signal.SIGINT: "interrupted (SIGINT)", signal.SIGTERM: "terminated (SIGTERM)"}

    def __init__(self):
        self.requested, self._previous = None, {}

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = self.SIGNALS[signum]

    def __enter__(self):
        for signum in self.SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
