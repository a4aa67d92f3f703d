"""The Keras code that keras_unet.keras_patches works around is still the code Keras runs.

When a Keras release changes it, these tests fail: check then whether tensorflow/tensorflow#72388
is fixed (run tests/test_distributed.py without the patches) and delete the patches if so.
"""
import inspect

from keras.src.backend.tensorflow import trainer as tf_trainer


def test_keras_still_reduces_scalar_logs_over_axis_0_under_multiworker():
    function = tf_trainer.reduce_per_replica
    if getattr(function, "_keras_unet_patched", False):  # patched earlier in this process
        function = function.__closure__[0].cell_contents if function.__closure__ else function
    source = inspect.getsource(function)
    assert "if _collective_all_reduce_multi_worker(strategy):" in source
    assert 'return strategy.reduce("MEAN", v, axis=0)' in source


def test_keras_still_reduces_the_whole_first_batch_in_its_symbolic_build():
    source = inspect.getsource(tf_trainer.TensorFlowTrainer._maybe_symbolic_build)
    assert "data_batch = self.distribute_strategy.reduce(" in source
    assert "maybe_distributed_data_batch" in source
