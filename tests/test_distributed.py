"""Two MultiWorkerMirroredStrategy workers on 127.0.0.1 (CPU) train in lockstep."""
import json
import socket
import subprocess
import sys

import numpy as np

from conftest import child_env

CONFIG = dict(depth=3, base_filters=4, tile=68, batch_size=2, epochs=2, steps_per_epoch=3, dropout=0.0,
              synthetic_images=4, synthetic_size=64, optimizer="sgd", learning_rate=0.05, momentum=0.9,
              val_fraction=0.0, augment=True,
              precision="float32")  # not auto: each process would measure, and could choose, for itself

WORKER = """
import json, sys
import keras
import numpy as np
from keras_unet import train
config = train.TrainConfig(**json.loads(sys.argv[1]))
weights = train.fit(config, sys.argv[2], verbose=0)["model"].weights
np.savez(sys.argv[3], *[np.asarray(w) for w in weights])
"""


def free_ports(n):
    """Ports the kernel gave out and took back. Another process may take one in between (the
    workers bind them a moment later): :func:`run_workers` tries again with new ports then."""
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def start(config, run_dir, out, tf_config=None):
    env = child_env(**({"TF_CONFIG": json.dumps(tf_config)} if tf_config else {}))
    return subprocess.Popen([sys.executable, "-c", WORKER, json.dumps(config), str(run_dir), str(out)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def load(path):
    with np.load(path) as npz:
        return [npz[k] for k in sorted(npz.files, key=lambda k: int(k.split("_")[1]))]


def run_workers(config, tmp_path, tries: int = 3):
    """Both workers' outputs; a cluster whose port was taken meanwhile is started again."""
    for _ in range(tries):
        cluster = {"worker": [f"127.0.0.1:{p}" for p in free_ports(2)]}
        workers = [start(config, tmp_path / f"run{i}", tmp_path / f"w{i}.npz",
                         {"cluster": cluster, "task": {"type": "worker", "index": i}}) for i in range(2)]
        try:
            outputs = [w.communicate(timeout=300)[0] for w in workers]
        finally:
            for w in workers:
                w.kill()
        if all(w.returncode == 0 for w in workers) or not any("ddress already in use" in o for o in outputs):
            return workers, outputs
    return workers, outputs


def test_two_workers_train_in_sync_and_match_one_process(tmp_path):
    import keras

    from keras_unet import train

    multi = {**CONFIG, "strategy": "multiworker"}
    workers, outputs = run_workers(multi, tmp_path)
    for w, out in zip(workers, outputs):
        assert w.returncode == 0, out[-3000:]
    # the global batch is 2 workers x 2 tiles; one process with batch 4 sees the same samples
    single = start({**CONFIG, "batch_size": 4}, tmp_path / "single", tmp_path / "single.npz")
    out = single.communicate(timeout=300)[0]
    assert single.returncode == 0, out[-3000:]
    # the initial weights: the model fit builds (percentile-normalised input: no input range), seeded as fit seeds it
    config = train.TrainConfig(**CONFIG)
    keras.utils.set_random_seed(config.seed)
    initial_model = train.build_model(config, 1, None)
    np.savez(tmp_path / "init.npz", *[np.asarray(w) for w in initial_model.weights])

    chief, other = load(tmp_path / "w0.npz"), load(tmp_path / "w1.npz")
    alone, initial = load(tmp_path / "single.npz"), load(tmp_path / "init.npz")
    for a, b in zip(chief, other):
        np.testing.assert_array_equal(a, b)  # workers in lockstep
    learned = max(float(np.abs(a - b).max()) for a, b in zip(alone, initial))
    mismatch = max(float(np.abs(a - b).max()) for a, b in zip(chief, alone))
    assert learned > 1e-3  # training really moved the weights
    assert mismatch < 0.01 * learned, (mismatch, learned)  # same steps as one process with the global batch
    assert (tmp_path / "run0" / "model.keras").is_file()  # the chief writes the run folder
    assert not (tmp_path / "run1").exists()  # the other worker writes nothing
