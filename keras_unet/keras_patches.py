"""Work-arounds for two Keras 3 bugs that break ``fit`` under MultiWorkerMirroredStrategy with
more than one worker (tensorflow/tensorflow#72388; its only advice is to go back to Keras 2).

1. ``TensorFlowTrainer._maybe_symbolic_build`` hands the whole ``(x, y)`` batch of per-replica
   values to ``strategy.reduce``, which the collective all-reduce rejects ("Attempt to convert a
   value (PerReplica...) to a Tensor"). The build needs only shapes: build from local values.
   Patched on the model being trained only (an instance attribute).
2. ``reduce_per_replica`` reduces the scalar losses and metrics of the logs with ``axis=0``
   ("Invalid reduction dimension 0 for input with 0 dimensions"): reduce scalars with
   ``axis=None``. This one replaces the module-level function in
   ``keras.src.backend.tensorflow.trainer`` **for the whole process** (every model trained after
   it, under any strategy); the replacement differs from Keras only for collective multi-worker
   strategies, so other strategies are unaffected.

The gradients are all-reduced by the strategy as usual; tests/test_distributed.py checks two
workers against a one-process run, and tests/test_keras_patches.py fails when a Keras release
changes the code these patches replace, which is the moment to check whether they are still needed.
"""
from __future__ import annotations

import keras
import tensorflow as tf


def patch_multiworker_fit(model: keras.Model) -> None:
    """Apply both work-arounds (see the module docstring) before ``model.fit``."""
    from keras.src.backend.tensorflow import trainer as tf_trainer

    strategy = model.distribute_strategy
    if not getattr(tf_trainer.reduce_per_replica, "_keras_unet_patched", False):
        original = tf_trainer.reduce_per_replica

        def reduce_per_replica(values, strategy, reduction):
            if reduction in ("auto", "mean") and tf_trainer._collective_all_reduce_multi_worker(strategy):
                return tf.nest.map_structure(
                    lambda v: strategy.reduce("MEAN", v, axis=None if v.shape.rank == 0 else 0), values)
            return original(values, strategy, reduction)

        reduce_per_replica._keras_unet_patched = True
        tf_trainer.reduce_per_replica = reduce_per_replica

    def local(value):
        return strategy.experimental_local_results(value)[0] if isinstance(value, tf.distribute.DistributedValues) else value

    def maybe_symbolic_build(iterator=None, data_batch=None):
        if iterator is not None:
            for _, _, batches in iterator:
                data_batch = tf.nest.map_structure(local, next(batches))
                break
        with strategy.scope():
            model._symbolic_build(data_batch=data_batch)

    model._maybe_symbolic_build = maybe_symbolic_build
