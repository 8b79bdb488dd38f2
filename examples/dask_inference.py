"""Batched inference over a dataset with Dask: a compiled model runs in worker processes.

    pip install "dask[distributed]"
    python examples/dask_inference.py [MODEL.onnx]      # default: a small CNN made here with onnx.helper

A ``CompiledModel`` pickles as its ONNX bytes plus compile options; unpickling compiles it again, and the
kernels come from cnnjit's on-disk cache, so a worker pays a few milliseconds, not a numba compile. The
model's batch dimension is symbolic, so each worker specialises it once per block size it sees.
"""

from __future__ import annotations

import sys

import numpy as np
from onnx import TensorProto, helper, numpy_helper

import cnnjit


def small_cnn(classes: int = 5) -> bytes:
    """Conv(3->8, 3x3) + Relu + global average pool + Gemm + Softmax on [N, 3, 16, 16] inputs."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32) * 0.3, "w"),
             numpy_helper.from_array(np.zeros(8, np.float32), "b"),
             numpy_helper.from_array(rng.standard_normal((classes, 8)).astype(np.float32), "fc_w"),
             numpy_helper.from_array(np.zeros(classes, np.float32), "fc_b")]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("GlobalAveragePool", ["r"], ["p"]),
             helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["g"], transB=1),
             helper.make_node("Softmax", ["g"], ["y"], axis=1)]
    graph = helper.make_graph(nodes, "small_cnn",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", classes])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model.SerializeToString()


def predict_with_dask(model: cnnjit.CompiledModel, images: np.ndarray, block: int = 64,
                      workers: int = 2) -> np.ndarray:
    """Run ``model`` over ``images`` (first axis = batch) on a local cluster of worker processes."""
    import dask.array as da
    from dask.distributed import Client, LocalCluster

    x = da.from_array(images, chunks=(block,) + images.shape[1:])
    n_out = model(images[:1]).shape[1]  # classes, from one local call
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        # the model is pickled into the task graph once; each worker unpickles (re-compiles) it
        y = x.map_blocks(model, dtype=np.float32, drop_axis=list(range(2, images.ndim)),
                         chunks=(x.chunks[0], (n_out,)))
        return client.compute(y).result()


def main(argv: list[str]) -> None:
    model = cnnjit.compile(argv[0] if argv else small_cnn())
    shape = [d if d is not None else 1 for d in model.inputs[0].dims]
    images = np.random.default_rng(1).standard_normal((256, *shape[1:])).astype(np.float32)
    scores = predict_with_dask(model, images)
    assert np.allclose(scores, model(images), atol=1e-5)
    print(f"{len(images)} images -> scores {scores.shape}; class counts {np.bincount(scores.argmax(1)).tolist()}")


if __name__ == "__main__":
    main(sys.argv[1:])
