"""FLOPs and bytes moved per ONNX node at a given batch size, read from the graph itself.

Also which nodes a runtime runs as one kernel (``kernel_groups``): a roofline of a small
policy is dominated by the fixed cost per kernel, so the kernel count matters as much as
the FLOPs. Two fusion styles are modeled:

- ``onnxruntime``: a Gemm/MatMul followed by an activation it alone feeds runs as one
  ``FusedGemm`` (onnxruntime's GemmActivationFusion); every other node is its own kernel.
- ``tensorrt``: additionally, chains of elementwise nodes run as one pointwise kernel and
  elementwise nodes after a Gemm/MatMul run in its epilogue (TensorRT's pointwise and
  epilogue fusion). An assumption about the engine a board would build, not a measurement.
"""

from __future__ import annotations

import os
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import onnx
from onnx import numpy_helper, shape_inference

# Nodes that cost ~one FLOP per output element.
_ELEMENTWISE = {"Add", "Sub", "Mul", "Div", "Max", "Min", "Clip", "Relu", "Tanh", "Elu", "Sigmoid", "Neg",
                "Sqrt", "Exp", "Abs", "ArgMax", "LeakyRelu", "HardSigmoid", "Softplus"}
_MATMUL = {"Gemm", "MatMul"}
# Activations onnxruntime folds into a preceding Gemm (GemmActivationFusion).
_ORT_GEMM_ACTIVATIONS = {"Relu", "Tanh", "Sigmoid", "LeakyRelu", "HardSigmoid", "Elu"}
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


def node_costs(onnx_path: str | Path, batch: int = 1) -> list[NodeCost]:
    model = onnx.load(str(onnx_path))
    return graph_costs(model, batch)


def graph_costs(model: onnx.ModelProto, batch: int = 1) -> list[NodeCost]:
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph_input = model.graph.input[0]
    graph_input.type.tensor_type.shape.dim[0].dim_value = batch
    inferred = shape_inference.infer_shapes(model)
    shapes: dict[str, list[int]] = {}
    for value in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        dims = [d.dim_value if d.HasField("dim_value") else batch for d in value.type.tensor_type.shape.dim]
        shapes[value.name] = dims
    initializers = {init.name: numpy_helper.to_array(init) for init in inferred.graph.initializer}
    for name, array in initializers.items():
        shapes[name] = list(array.shape)
    costs = []
    for node in inferred.graph.node:
        in_shapes = [shapes.get(name, []) for name in node.input if name]
        out_shapes = [shapes.get(name, []) for name in node.output if name]
        out_elems = sum(int(np.prod(s)) if s else 1 for s in out_shapes)
        moved = sum(int(np.prod(s)) if s else 1 for s in in_shapes) + out_elems
        if node.op_type in _MATMUL and len(in_shapes) >= 2 and in_shapes[0] and in_shapes[1]:
            rows = int(np.prod(in_shapes[0][:-1]))
            inner = in_shapes[0][-1]
            cols = in_shapes[1][-1] if node.op_type == "MatMul" else _gemm_cols(node, in_shapes[1])
            flops = 2.0 * rows * inner * cols + (rows * cols if len(in_shapes) > 2 else 0)
        elif node.op_type in _ELEMENTWISE:
            flops = float(out_elems)
        else:
            flops = 0.0
        costs.append(NodeCost(node.name or node.op_type, node.op_type, flops, float(moved * _FLOAT_BYTES),
                              tuple(n for n in node.input if n), tuple(n for n in node.output if n),
                              float(out_elems * _FLOAT_BYTES)))
    return costs


def _gemm_cols(node: onnx.NodeProto, weight_shape: list[int]) -> int:
    trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
    return weight_shape[0] if trans_b else weight_shape[-1]


def kernel_groups(costs: Sequence[NodeCost], style: str) -> list[int]:
    """For each node, the index of the kernel it runs in (nodes are in topological order)."""
    if style not in FUSION_STYLES:
        raise ValueError(f"fusion style {style!r} is not one of {FUSION_STYLES}")
    consumers = Counter(name for cost in costs for name in cost.inputs)
    producer = {name: i for i, cost in enumerate(costs) for name in cost.outputs}
    groups: list[int] = []
    kinds: list[str] = []  # per kernel: "matmul", "pointwise" or "other"
    for i, cost in enumerate(costs):
        # The one dynamic input fed by an earlier node, which only this node reads.
        sole_feeds = [producer[name] for name in cost.inputs if name in producer and consumers[name] == 1]
        parent = groups[sole_feeds[0]] if len(sole_feeds) == 1 else None
        fused = False
        if parent is not None and parent == len(kinds) - 1 and style != "none":
            parent_kind = kinds[parent]
            if style == "onnxruntime":
                fused = (parent_kind == "matmul" and cost.op_type in _ORT_GEMM_ACTIVATIONS
                         and costs[sole_feeds[0]].op_type in _MATMUL)
            else:  # tensorrt
                fused = cost.op_type in _ELEMENTWISE and parent_kind in ("matmul", "pointwise")
        if fused:
            groups.append(parent)
            if style == "onnxruntime":
                kinds[parent] = "matmul-fused"  # one activation per FusedGemm
        else:
            groups.append(len(kinds))
            kinds.append("matmul" if cost.op_type in _MATMUL else
                         "pointwise" if cost.op_type in _ELEMENTWISE else "other")
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
