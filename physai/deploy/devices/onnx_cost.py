"""FLOPs and bytes moved per ONNX node at a given batch size, read from the graph itself.

Counted: Gemm/MatMul and Conv/ConvTranspose (2 FLOP per multiply-add, plus the bias), pooling (one
FLOP per window element), elementwise ops and activations (one per output element, two for a
BatchNormalization), reductions (one per input element); layout-only nodes (Reshape, Flatten, ...)
cost nothing and move nothing, since onnxruntime runs them as views; a node that reads only weights
is left out, since onnxruntime folds it when the session is built. Bytes are the node's inputs,
weights included, plus its outputs, counted at FP32; a precision scales them in the roofline.

Also which nodes a runtime runs as one kernel (``kernel_groups``): a roofline of a small
policy is dominated by the fixed cost per kernel, so the kernel count matters as much as
the FLOPs. Two fusion styles are modeled:

- ``onnxruntime``: a Gemm/MatMul or Conv followed by an activation it alone feeds runs as one
  kernel (GemmActivationFusion, ConvActivationFusion), a BatchNormalization after a Conv is
  folded into it (ConvBNFusion); every other node is its own kernel.
- ``tensorrt``: additionally, chains of elementwise nodes run as one pointwise kernel and
  elementwise nodes after a Gemm/MatMul/Conv (a residual Add included) run in its epilogue
  (TensorRT's pointwise and epilogue fusion). An assumption about the engine a board would
  build, not a measurement.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import onnx
from onnx import numpy_helper, shape_inference

from physai.core.errors import ConfigError

log = logging.getLogger(__name__)

# Nodes that cost ~one FLOP per output element.
_ELEMENTWISE = {"Add", "Sub", "Mul", "Div", "Max", "Min", "Clip", "Relu", "Tanh", "Elu", "Sigmoid", "Neg",
                "Sqrt", "Exp", "Abs", "ArgMax", "LeakyRelu", "HardSigmoid", "Softplus", "HardSwish", "Gelu",
                "Erf", "Pow", "PRelu", "Selu", "Softmax", "BatchNormalization"}
_MATMUL = {"Gemm", "MatMul"}
_CONV = {"Conv", "ConvTranspose"}
_COMPUTE = _MATMUL | _CONV
_POOL = {"MaxPool", "AveragePool", "LpPool"}
_REDUCE = {"GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool", "ReduceMean", "ReduceSum", "ReduceMax",
           "ReduceMin", "ReduceL2"}
# Layout-only nodes: onnxruntime hands their input buffer on, nothing is copied.
_VIEWS = {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Dropout"}
# Activations onnxruntime folds into a preceding Gemm (GemmActivationFusion) or Conv (ConvActivationFusion).
_ORT_ACTIVATIONS = {"Gemm": {"Relu", "Tanh", "Sigmoid", "LeakyRelu", "HardSigmoid", "Elu"},
                    "Conv": {"Relu", "Tanh", "Sigmoid", "LeakyRelu", "HardSigmoid", "Clip"}}
_FLOAT_BYTES = 4
FUSION_STYLES = ("none", "onnxruntime", "tensorrt")


@dataclass
class NodeCost:
    name: str
    op_type: str
    flops: float
    bytes: float
    # Names of the tensors this node reads and writes (to find producer/consumer chains).
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    output_bytes: float = 0.0

    @property
    def intensity(self) -> float:
        """Arithmetic intensity in FLOP per byte moved."""
        return self.flops / self.bytes if self.bytes else float("inf")


def node_costs(onnx_path: str | Path, batch: Optional[int] = 1) -> list[NodeCost]:
    model = onnx.load(str(onnx_path))
    return graph_costs(model, batch)


def input_shapes(model: onnx.ModelProto, batch: Optional[int]) -> dict[str, list[int]]:
    """Every graph input's concrete shape: its fixed sizes, ``batch`` on a dynamic axis 0.

    A dynamic axis other than 0, or a dynamic axis 0 without ``batch``, is refused, naming the input
    and the fix: a FLOP count needs every size.
    """
    shapes: dict[str, list[int]] = {}
    for value in graph_inputs(model):
        if not value.type.tensor_type.HasField("shape"):
            raise ConfigError(f"input {value.name!r} has no shape in the graph; export the model with its input "
                              f"shapes (torch.onnx.export does), or run onnx's shape inference on it first")
        shape = []
        for axis, dim in enumerate(value.type.tensor_type.shape.dim):
            label = dim.dim_param or "unnamed"
            if dim.HasField("dim_value") and dim.dim_value > 0:
                shape.append(int(dim.dim_value))
            elif axis == 0 and batch is not None:
                shape.append(int(batch))
            elif axis == 0:
                raise ConfigError(f"input {value.name!r} has a dynamic batch axis ({label!r}); give the batch "
                                  f"sizes to profile, e.g. --batch 1,8")
            else:
                raise ConfigError(f"input {value.name!r} has a dynamic axis {axis} ({label!r}); only the batch "
                                  f"axis (0) may be dynamic: export the model with a fixed size for axis {axis}")
        shapes[value.name] = shape
    return shapes


def graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """The inputs a caller feeds (graphs from before IR 4 list their weights as inputs too)."""
    weights = {init.name for init in model.graph.initializer}
    return [value for value in model.graph.input if value.name not in weights]


def fixed_batch(model: onnx.ModelProto) -> Optional[int]:
    """The batch size the graph fixes on axis 0 of its inputs, or None where that axis is dynamic."""
    for value in graph_inputs(model):
        dims = value.type.tensor_type.shape.dim
        if dims and dims[0].HasField("dim_value") and dims[0].dim_value > 0:
            return int(dims[0].dim_value)
    return None


def graph_costs(model: onnx.ModelProto, batch: Optional[int] = 1) -> list[NodeCost]:
    model = onnx.ModelProto.FromString(model.SerializeToString())
    fixed = input_shapes(model, batch)
    for value in model.graph.input:
        if value.name in fixed:
            dims = value.type.tensor_type.shape.dim
            for dim, size in zip(dims, fixed[value.name]):
                dim.Clear()
                dim.dim_value = size
    inferred = shape_inference.infer_shapes(model, data_prop=True)
    fill = batch or 1
    shapes: dict[str, list[int]] = {}
    guessed = []
    for value in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        tensor = value.type.tensor_type
        if not tensor.HasField("shape"):
            continue
        dims = [d.dim_value if d.HasField("dim_value") else (fill if axis == 0 else 1)
                for axis, d in enumerate(tensor.shape.dim)]
        if any(not d.HasField("dim_value") for d in tensor.shape.dim):
            guessed.append(value.name)
        shapes[value.name] = dims
    if guessed:
        log.warning("shape inference left %d tensor(s) with unknown sizes (e.g. %s): counted with the batch on "
                    "axis 0 and 1 elsewhere", len(guessed), ", ".join(guessed[:3]))
    initializers = {init.name: numpy_helper.to_array(init) for init in inferred.graph.initializer}
    for name, array in initializers.items():
        shapes[name] = list(array.shape)
    costs = []
    constant = set(initializers)
    for node in inferred.graph.node:
        if all(name in constant for name in node.input if name):
            constant.update(node.output)  # onnxruntime folds it once, when the session is built
            continue
        in_shapes = [shapes.get(name, []) for name in node.input if name]
        out_shapes = [shapes.get(name, []) for name in node.output if name]
        out_elems = sum(_elements(s) for s in out_shapes)
        moved = sum(_elements(s) for s in in_shapes) + out_elems
        flops = _flops(node, in_shapes, out_shapes, out_elems)
        if node.op_type in _VIEWS:
            moved = 0
        costs.append(NodeCost(node.name or node.op_type, node.op_type, flops, float(moved * _FLOAT_BYTES),
                              tuple(n for n in node.input if n), tuple(n for n in node.output if n),
                              0.0 if node.op_type in _VIEWS else float(out_elems * _FLOAT_BYTES)))
    return costs


def _elements(shape: list[int]) -> int:
    return int(np.prod(shape)) if shape else 1


def _attribute(node: onnx.NodeProto, name: str, default):
    found = next((a for a in node.attribute if a.name == name), None)
    return default if found is None else onnx.helper.get_attribute_value(found)


def _flops(node: onnx.NodeProto, in_shapes: list[list[int]], out_shapes: list[list[int]], out_elems: int) -> float:
    """Arithmetic of one node: multiply-adds count 2, a comparison or an add 1."""
    op = node.op_type
    if op in _MATMUL and len(in_shapes) >= 2 and in_shapes[0] and in_shapes[1]:
        a, b = in_shapes[0], in_shapes[1]
        if op == "MatMul":
            rows, inner, cols = int(np.prod(a[:-1])), a[-1], b[-1]
        else:
            rows, inner = (a[1], a[0]) if _attribute(node, "transA", 0) else (a[0], a[1])
            cols = b[0] if _attribute(node, "transB", 0) else b[-1]
        return 2.0 * rows * inner * cols + (rows * cols if len(in_shapes) > 2 else 0)
    if op in _CONV and len(in_shapes) >= 2 and len(in_shapes[1]) >= 3 and out_shapes and out_shapes[0]:
        weight = in_shapes[1]
        window = int(np.prod(weight[2:]))
        bias = out_elems if len(in_shapes) > 2 else 0
        if op == "Conv":  # each output element: (C_in / groups) x window multiply-adds
            return 2.0 * out_elems * weight[1] * window + bias
        in_elems = _elements(in_shapes[0])  # ConvTranspose: each input element scatters into C_out / groups
        return 2.0 * in_elems * weight[1] * window + bias
    if op in _POOL:
        return float(out_elems * int(np.prod(_attribute(node, "kernel_shape", [1]))))
    if op in _REDUCE:
        return float(_elements(in_shapes[0]) if in_shapes else 0)
    if op in _ELEMENTWISE:
        return float(out_elems * (2 if op == "BatchNormalization" else 1))
    return 0.0


def kernel_groups(costs: Sequence[NodeCost], style: str) -> list[int]:
    """For each node, the index of the kernel it runs in (nodes are in topological order)."""
    if style not in FUSION_STYLES:
        raise ValueError(f"fusion style {style!r} is not one of {FUSION_STYLES}")
    consumers = Counter(name for cost in costs for name in cost.inputs)
    producer = {name: i for i, cost in enumerate(costs) for name in cost.outputs}
    groups: list[int] = []
    anchors: list[str] = []  # per kernel: the op type of its first node
    open_: list[bool] = []   # onnxruntime: the kernel may still take a BatchNormalization or an activation
    for i, cost in enumerate(costs):
        # The one dynamic input fed by an earlier node, which only this node reads.
        sole_feeds = [producer[name] for name in cost.inputs if name in producer and consumers[name] == 1]
        parent = groups[sole_feeds[0]] if len(sole_feeds) == 1 else None
        fused = False
        if parent is not None and parent == len(anchors) - 1 and style != "none":
            anchor = anchors[parent]
            if style == "onnxruntime":
                fused = open_[parent] and (cost.op_type in _ORT_ACTIVATIONS.get(anchor, ())
                                           or cost.op_type == "BatchNormalization" and anchor == "Conv")
                open_[parent] = fused and cost.op_type == "BatchNormalization"  # one activation per kernel
            else:  # tensorrt: pointwise chains, and pointwise epilogues of a Gemm/MatMul/Conv
                fused = cost.op_type in _ELEMENTWISE and (anchor in _COMPUTE or anchor in _ELEMENTWISE)
        if fused:
            groups.append(parent)
        else:
            groups.append(len(anchors))
            anchors.append(cost.op_type)
            open_.append(cost.op_type in _COMPUTE)
    return groups


def runtime_kernel_count(onnx_path: str | Path) -> int:
    """Nodes onnxruntime actually runs after its graph optimizations (checks ``kernel_groups``)."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as folder:
        target = os.path.join(folder, "optimized.onnx")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        options.optimized_model_filepath = target
        ort.InferenceSession(str(onnx_path), sess_options=options, providers=["CPUExecutionProvider"])
        return len(onnx.load(target).graph.node)
