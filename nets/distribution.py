"""How a training run spreads over devices (train.py's --distribute and --devices), and the
session settings that go with it (mixed precision, XLA, the CPU split into devices).

docs/scaling.md is the user's side of this: one GPU, several GPUs of a machine, several machines.
"""
import os
import re

import tensorflow.compat.v1 as tf
from tensorflow.core.protobuf import rewriter_config_pb2

import cli

MODES = ("auto", "none", "mirrored", "multi_worker")
DEVICE = re.compile(r"^/?(?:device:)?(cpu|gpu):(\d+)$", re.IGNORECASE)  # --devices


def valid_devices(names):
    """Whether every name of --devices is a device like /gpu:0 or /cpu:1."""
    return all(DEVICE.match(name.strip()) for name in names or ())


class Distribution:
    """How a run spreads over devices:
    - "none": one device, TF's placement (the first GPU when there is one);
    - "mirrored": tf.distribute.MirroredStrategy, one replica per device of this machine
      (default: every visible GPU; CPU devices /cpu:N are made by splitting the CPU, to test
      without GPUs);
    - "multi_worker": tf.distribute.MultiWorkerMirroredStrategy over the machines TF_CONFIG
      lists, every local GPU (or the CPU) of each; this process serves its task and only the
      chief writes the train_dir;
    - "auto": mirrored when more than one GPU is visible or --devices is given, else none.
    `strategy` is None for one device (nets/train_step.py builds the step by the same code
    path then, under tf.distribute's default strategy); `chief`: whether this process writes the train_dir."""

    def __init__(self, mode, devices=(), gpus=0):
        devices = [_device(name) for name in devices or ()]
        if mode == "auto":
            mode = "mirrored" if devices or gpus > 1 else "none"
        if devices and mode != "mirrored":
            raise cli.UserError(f"--devices is for --distribute=mirrored (not {mode})")
        self.mode, self.chief, self.target, self.cpu_devices = mode, True, "", 1
        self.strategy = None
        if mode == "mirrored":
            devices = devices or [f"/gpu:{i}" for i in range(gpus)] or ["/cpu:0"]
            missing = [d for d in devices if d.startswith("/gpu") and int(d[5:]) >= gpus]
            if missing:
                raise cli.UserError(f"--devices: {', '.join(missing)} not visible ({gpus} GPUs)")
            cpus = [int(d[5:]) for d in devices if d.startswith("/cpu")]
            self.cpu_devices = 1 + max(cpus, default=0)
            self.strategy = tf.distribute.MirroredStrategy(devices)
        elif mode == "multi_worker":
            self._join_cluster()
        self.replicas = self.strategy.num_replicas_in_sync if self.strategy else 1

    def _join_cluster(self):
        if not os.environ.get("TF_CONFIG"):
            raise cli.UserError("--distribute=multi_worker needs TF_CONFIG (the cluster and this "
                                "process's task, see docs/scaling.md)")
        try:
            self.strategy = tf.distribute.experimental.MultiWorkerMirroredStrategy()
        except ValueError as error:
            raise cli.UserError(f"TF_CONFIG: {cli.first_line(error)}") from None
        resolver = self.strategy.cluster_resolver
        # In a v1 graph the strategy starts no server: this process's task serves from here,
        # with the strategy's collective settings, and the session runs through it.
        self._server = tf.distribute.Server(
            resolver.cluster_spec(), job_name=resolver.task_type, task_index=resolver.task_id,
            config=self._device_config(tf.ConfigProto()), start=True)
        self.target = self._server.target
        self.chief = self.strategy.extended.should_checkpoint

    def check_batch(self, batch_size):
        if batch_size % self.replicas:
            raise cli.UserError(f"--batch_size={batch_size} does not split evenly across "
                                f"{self.replicas} replicas: it is the global batch, shared by "
                                "the replicas")

    def _device_config(self, config):
        if self.strategy:
            config = self.strategy.update_config_proto(config)
        if self.cpu_devices > 1:  # the v1 session's own devices: the CPU split in several
            config.device_count["CPU"] = self.cpu_devices
        return config

    def session_config(self, mixed_precision=False, gpu=False, xla=False):
        """The session's settings for this distribution, mixed precision and XLA."""
        config = self._device_config(tf.ConfigProto())
        config.gpu_options.allow_growth = True
        if mixed_precision:
            # Grappler's auto mixed precision pass rewrites the graph to float16 compute with
            # float32 variables on GPUs; without one, its CPU variant emulates float16 (tests).
            options = config.graph_options.rewrite_options
            if gpu:
                options.auto_mixed_precision = rewriter_config_pb2.RewriterConfig.ON
            else:
                options.auto_mixed_precision_cpu = rewriter_config_pb2.RewriterConfig.ON
        if xla:
            config.graph_options.optimizer_options.global_jit_level = tf.OptimizerOptions.ON_1
        return config

    def describe(self):
        if self.mode == "none":
            return "one device"
        return f"{self.mode} over {self.replicas} replicas"


def _device(name):
    match = DEVICE.match(name.strip())
    if not match:
        raise cli.UserError(f"--devices: {name!r} is not a device like /gpu:0 or /cpu:1")
    return f"/{match.group(1).lower()}:{int(match.group(2))}"
