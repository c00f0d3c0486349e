"""Which nodes of an exported graph stay in float in its int8 copies.

The exported graph computes the raw outputs (peaks, mask logits) and the merge core's outputs
(``CORE_OUTPUTS``, ``SEMANTIC_OUTPUT``) from them. Its network is the traced ``model``
attribute of each meta-architecture's export module, so its nodes are named ``/model/...``.

* ``merge_node_names``: the ancestors of the core outputs that no raw output depends on.
  Quantizing them would change the owner map (its one-hot MatMuls gather values exactly only
  in float). NNCF's ignored scope uses the same rule on an OpenVINO model
  (``openvino.merge_ops``).
* ``outside_network``: every node not under ``/model/`` (the input's layout and scaling, the
  merge, and the peak finding where a meta-architecture does it outside its model).
  onnxruntime's static int8 quantizes every operator type it can inside the network and
  leaves these in float. MaskConver finds its peaks inside the model, so they are quantized
  with it: on a trained ``tiny`` checkpoint PQ moved by -0.33 (docs/performance.md).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from maskconver.export.graph import CORE_OUTPUTS, SEMANTIC_OUTPUT, ExportError

NETWORK_PREFIX = "/model/"  # node names of the traced network (the export modules' ``model``)


def merge_node_names(model: Any) -> list[str]:
    """Names of the nodes of an ``onnx.ModelProto`` that only the merge core needs.

    Raises:
        ExportError: the graph has no raw outputs to tell the network from the merge.
    """
    graph = model.graph
    outputs = [o.name for o in graph.output]
    merge = [n for n in (*CORE_OUTPUTS, SEMANTIC_OUTPUT) if n in outputs]
    raw = [n for n in outputs if n not in merge]
    if not raw:
        raise ExportError("the graph has no raw outputs to tell the network from the merge")
    producer = {out: node for node in graph.node for out in node.output}

    def ancestors(names: Iterable[str]) -> set[str]:
        seen: set[str] = set()
        stack = [producer[n] for n in names if n in producer]
        while stack:
            node = stack.pop()
            if node.name not in seen:
                seen.add(node.name)
                stack.extend(producer[i] for i in node.input if i in producer)
        return seen

    return sorted(ancestors(merge) - ancestors(raw))


def outside_network(model: Any) -> list[str]:
    """Names of the nodes of an ``onnx.ModelProto`` outside the network (``NETWORK_PREFIX``)."""
    return [n.name for n in model.graph.node if not n.name.startswith(NETWORK_PREFIX)]


def network_only(model: Any) -> Any:
    """A copy of an ``onnx.ModelProto`` without its merge: the raw outputs and what they need.

    The nodes, initializers and inputs only the merge core uses are dropped, so running the
    copy on the same feed (minus the inputs it no longer has) times everything but the merge
    (``benchmark --compare``'s merge share).

    Raises:
        ExportError: the graph has no raw outputs to tell the network from the merge.
    """
    import onnx

    dropped = set(merge_node_names(model))
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    graph = copy.graph
    kept = [node for node in graph.node if node.name not in dropped]
    merge = set(CORE_OUTPUTS) | {SEMANTIC_OUTPUT}
    outputs = [o for o in graph.output if o.name not in merge]
    used = {name for node in kept for name in node.input} | {o.name for o in outputs}
    inputs = [i for i in graph.input if i.name in used]
    initializers = [t for t in graph.initializer if t.name in used]
    for field, values in (
        (graph.node, kept),
        (graph.output, outputs),
        (graph.input, inputs),
        (graph.initializer, initializers),
    ):
        chosen = list(values)
        del field[:]
        field.extend(chosen)
    return copy
