"""FLOPs and bytes moved per ONNX node at a given batch size, read from the graph itself."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper, shape_inference

# Nodes that cost ~one FLOP per output element.
_ELEMENTWISE = {"Add", "Sub", "Mul", "Div", "Max", "Min", "Clip", "Relu", "Tanh", "Elu", "Sigmoid", "Neg",
                "Sqrt", "Exp", "Abs", "ArgMax"}
_FLOAT_BYTES = 4


@dataclass
class NodeCost:
    name: str
    op_type: str
    flops: float
    bytes: float


def node_costs(onnx_path: str | Path, batch: int = 1) -> list[NodeCost]:
    model = onnx.load(str(onnx_path))
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
        if node.op_type in ("Gemm", "MatMul") and len(in_shapes) >= 2 and in_shapes[0] and in_shapes[1]:
            rows = int(np.prod(in_shapes[0][:-1]))
            inner = in_shapes[0][-1]
            cols = in_shapes[1][-1] if node.op_type == "MatMul" else _gemm_cols(node, in_shapes[1])
            flops = 2.0 * rows * inner * cols + (rows * cols if len(in_shapes) > 2 else 0)
        elif node.op_type in _ELEMENTWISE:
            flops = float(out_elems)
        else:
            flops = 0.0
        costs.append(NodeCost(node.name or node.op_type, node.op_type, flops, float(moved * _FLOAT_BYTES)))
    return costs


def _gemm_cols(node: onnx.NodeProto, weight_shape: list[int]) -> int:
    trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
    return weight_shape[0] if trans_b else weight_shape[-1]
