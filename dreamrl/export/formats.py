"""Writing the policy step to a file, and running the file again as its users will.

Two formats, each a writer and a runner:

- ``onnx``: ``torch.onnx.export`` with the TorchScript-based exporter (``dynamo=False``:
  it traces the step, needs no onnxscript, and gives a graph onnxruntime runs as it is);
  the batch dimension of every input and output is dynamic. Run with onnxruntime.
- ``torchscript``: ``torch.jit.trace``; run with ``torch.jit.load``, no dreamrl needed.

A runner takes and returns ``{name: numpy array}``, named as in the step's signature.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from dreamrl.config import ConfigError
from dreamrl.export import FORMATS
from dreamrl.export.graph import PolicyStep, example_inputs

Runner = Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]]

OPSET = 17  # onnxruntime has run opset 17 since 1.13; nothing here needs a newer one
RUNTIMES = {"onnx": "onnxruntime", "torchscript": "torch.jit.load"}


def check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise ConfigError(f"--format: {fmt!r} is not an export format; allowed: {', '.join(FORMATS)}")


def write(step: PolicyStep, fmt: str, path: Path) -> None:
    """Write ``step`` to ``path`` in format ``fmt``."""
    check_format(fmt)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), _tracing():
        if fmt == "onnx":
            _write_onnx(step, path)
        else:
            _write_torchscript(step, path)


def load(fmt: str, path: Path, inputs: Sequence[str], outputs: Sequence[str]) -> Runner:
    """A runner of the file ``path`` (format ``fmt``) taking and returning tensors by the
    names ``inputs`` and ``outputs`` (a TorchScript module takes them in that order), as a
    user without dreamrl runs it."""
    check_format(fmt)
    return _onnx_runner(path) if fmt == "onnx" else _torchscript_runner(path, inputs, outputs)


@contextlib.contextmanager
def _tracing() -> Iterator[None]:
    # Both exporters trace; tracing warns about every Python value it takes as a constant
    # (the shapes of the layers), which is what a fixed architecture wants.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        yield


def _write_onnx(step: PolicyStep, path: Path) -> None:
    inputs = [t.name for t in step.inputs]
    outputs = [t.name for t in step.outputs]
    axes = {name: {0: "N"} for name in (*inputs, *outputs)}
    register_onnx_symbolics()
    torch.onnx.export(
        step,
        example_inputs(step),
        str(path),
        input_names=inputs,
        output_names=outputs,
        dynamic_axes=axes,
        opset_version=OPSET,
        dynamo=False,
    )
    _keep_every_input(path, step)


def _keep_every_input(path: Path, step: PolicyStep) -> None:
    """Put back the inputs the exporter left out of the file because the graph never reads
    them (the pixel world model ignores the previous action), so that every world model's
    file takes the inputs of the spec, in its order; onnxruntime accepts unread inputs."""
    import onnx

    model = onnx.load(str(path))
    present = {i.name: i for i in model.graph.input}
    if len(present) == len(step.inputs):
        return
    ordered = []
    for t in step.inputs:
        if t.name in present:
            ordered.append(present[t.name])
        else:
            elem = onnx.helper.np_dtype_to_tensor_dtype(np.dtype(t.dtype))
            ordered.append(onnx.helper.make_tensor_value_info(t.name, elem, list(t.shape)))
    del model.graph.input[:]
    model.graph.input.extend(ordered)
    onnx.save(model, str(path))


def _write_torchscript(step: PolicyStep, path: Path) -> None:
    traced = torch.jit.trace(step, example_inputs(step), check_trace=False)
    torch.jit.save(traced, str(path))


def register_onnx_symbolics() -> None:
    """Teach the TorchScript-based ONNX exporter ``aten::rms_norm`` (it has no rule for
    it): ``x / sqrt(mean(x², last axes) + eps) * weight`` in plain ONNX operators."""
    from torch.onnx import register_custom_op_symbolic

    register_custom_op_symbolic("aten::rms_norm", _rms_norm_symbolic, OPSET)


def _rms_norm_symbolic(g, x, normalized_shape, weight, eps):  # type: ignore[no-untyped-def]
    from torch.onnx import symbolic_helper

    # The tracer records RMSNorm's (x.shape[-1],) as a list built from a traced size: its
    # length, the number of normalised axes, is what the rule needs.
    if symbolic_helper._is_packed_list(normalized_shape):
        dims = len(symbolic_helper._unpack_list(normalized_shape))
    else:
        dims = len(symbolic_helper._get_const(normalized_shape, "is", "normalized_shape"))
    eps_value = symbolic_helper._maybe_get_const(eps, "f")
    if eps_value is None or symbolic_helper._is_none(eps):
        eps_value = torch.finfo(torch.float32).eps
    # Opset 17's ReduceMean takes its axes as an attribute (an input from opset 18 on).
    mean = g.op("ReduceMean", g.op("Mul", x, x), axes_i=list(range(-dims, 0)), keepdims_i=1)
    eps_const = g.op("Constant", value_t=torch.tensor(float(eps_value), dtype=torch.float32))
    out = g.op("Div", x, g.op("Sqrt", g.op("Add", mean, eps_const)))
    return out if symbolic_helper._is_none(weight) else g.op("Mul", out, weight)


def _onnx_runner(path: Path) -> Runner:
    try:
        import onnxruntime
    except ImportError:
        raise ConfigError(
            "checking an ONNX export needs onnxruntime: pip install 'dreamrl[export]'"
        ) from None
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = max(1, torch.get_num_threads())
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]

    def run(feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(names, session.run(names, dict(feed))))

    return run


def _torchscript_runner(path: Path, inputs: Sequence[str], outputs: Sequence[str]) -> Runner:
    with warnings.catch_warnings():
        # torch 2.13 marks torch.jit deprecated in favour of torch.export, whose files need
        # the same PyTorch to load; TorchScript files still load in every PyTorch since 1.x.
        warnings.simplefilter("ignore", DeprecationWarning)
        module = torch.jit.load(str(path))

    def run(feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        with torch.no_grad():
            result = module(*(torch.from_numpy(np.asarray(feed[name])) for name in inputs))
        return {name: value.numpy() for name, value in zip(outputs, result)}

    return run
