"""Local stand-in for Triton's onnxruntime backend (a Python-based backend).

The tritonserver binary bundled in the ``nvidia-pytriton`` wheel carries only the Python backend.
Triton's documented "Python-based backends" mechanism loads ``<backend-dir>/onnxruntime/model.py``
for every model whose config says ``platform: "onnxruntime_onnx"`` / ``backend: "onnxruntime"``,
so the generated repository loads here unchanged and in the production image (which has the real
C++ backend). This file is for local runs and tests only; it never goes into a Docker image.

Like the real backend, it refuses at load any config that disagrees with the ONNX graph (tensor
names, data types, dims, batch dimension): otherwise a wrong config would load READY and fail
only at the first request.
"""

import json
import os

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils

# onnxruntime's type strings -> Triton config data types.
ORT_TO_TRITON = {
    "tensor(bool)": "TYPE_BOOL",
    "tensor(uint8)": "TYPE_UINT8",
    "tensor(uint16)": "TYPE_UINT16",
    "tensor(uint32)": "TYPE_UINT32",
    "tensor(uint64)": "TYPE_UINT64",
    "tensor(int8)": "TYPE_INT8",
    "tensor(int16)": "TYPE_INT16",
    "tensor(int32)": "TYPE_INT32",
    "tensor(int64)": "TYPE_INT64",
    "tensor(float16)": "TYPE_FP16",
    "tensor(float)": "TYPE_FP32",
    "tensor(double)": "TYPE_FP64",
    "tensor(string)": "TYPE_STRING",
}


def _graph_dims(shape):
    """onnxruntime reports symbolic/unknown dims as str/None: those are dynamic (-1)."""
    return [d if isinstance(d, int) and d >= 0 else -1 for d in shape]


def check_config(config, graph_inputs, graph_outputs, model_path):
    """Return a list of human-readable mismatches between a Triton config and the ONNX graph."""
    errors = []
    batching = int(config.get("max_batch_size", 0)) > 0
    checks = (
        ("input", config.get("input", []), graph_inputs, True),
        ("output", config.get("output", []), graph_outputs, False),
    )
    for kind, declared, graph, must_cover in checks:
        by_name = {t.name: t for t in graph}
        for tensor in declared:
            name = tensor["name"]
            if name not in by_name:
                errors.append(
                    f"{kind} '{name}' is not in the ONNX graph (graph {kind}s: {sorted(by_name)})"
                )
                continue
            node = by_name[name]
            graph_type = ORT_TO_TRITON.get(node.type, node.type)
            if tensor["data_type"] != graph_type:
                errors.append(
                    f"{kind} '{name}': config data_type {tensor['data_type']} but the ONNX graph "
                    f"has {graph_type}"
                )
            dims = [int(d) for d in tensor.get("dims", [])]
            if "reshape" in tensor:
                continue
            graph_dims = _graph_dims(node.shape)
            if batching:
                if not graph_dims or graph_dims[0] != -1:
                    errors.append(
                        f"{kind} '{name}': config has max_batch_size "
                        f"{config['max_batch_size']} but the ONNX graph's first dimension is "
                        f"{graph_dims[:1]} (not a dynamic batch dimension)"
                    )
                    continue
                graph_dims = graph_dims[1:]
            if len(dims) != len(graph_dims) or any(
                g != -1 and d != g for d, g in zip(dims, graph_dims)
            ):
                errors.append(
                    f"{kind} '{name}': config dims {dims} (batch dimension excluded: "
                    f"{batching}) do not match the ONNX graph's {graph_dims}"
                )
        if must_cover:
            missing = sorted(set(by_name) - {t["name"] for t in declared})
            if missing:
                errors.append(f"the ONNX graph needs {kind}s {missing} that the config lacks")
    return errors


class TritonPythonModel:
    def initialize(self, args):
        self.config = json.loads(args["model_config"])
        name = self.config["name"]
        filename = self.config.get("default_model_filename") or "model.onnx"
        path = os.path.join(args["model_repository"], args["model_version"], filename)
        if not os.path.isfile(path):
            raise pb_utils.TritonModelException(f"model '{name}': no ONNX file at {path}")
        options = ort.SessionOptions()
        params = {
            k: v.get("string_value", "") for k, v in self.config.get("parameters", {}).items()
        }
        if params.get("intra_op_thread_count"):
            options.intra_op_num_threads = int(params["intra_op_thread_count"])
        if params.get("inter_op_thread_count"):
            options.inter_op_num_threads = int(params["inter_op_thread_count"])
        self.session = ort.InferenceSession(
            path, sess_options=options, providers=["CPUExecutionProvider"]
        )
        errors = check_config(
            self.config, self.session.get_inputs(), self.session.get_outputs(), path
        )
        if errors:
            raise pb_utils.TritonModelException(
                f"model '{name}' version {args['model_version']}: config.pbtxt disagrees with "
                f"{path}: " + "; ".join(errors)
            )
        self.batching = int(self.config.get("max_batch_size", 0)) > 0
        self.input_names = [t["name"] for t in self.config["input"]]
        self.output_names = [t["name"] for t in self.config["output"]]

    def execute(self, requests):
        """Run every request of a dynamic batch in one onnxruntime call, then split the result."""
        arrays = [
            [pb_utils.get_input_tensor_by_name(r, n).as_numpy() for n in self.input_names]
            for r in requests
        ]
        if self.batching and len(requests) > 1:
            feeds = {
                n: np.concatenate([a[i] for a in arrays]) for i, n in enumerate(self.input_names)
            }
        else:
            feeds = None
        responses = []
        if feeds is not None:
            outputs = self.session.run(self.output_names, feeds)
            start = 0
            for a in arrays:
                stop = start + a[0].shape[0]
                tensors = [
                    pb_utils.Tensor(n, np.ascontiguousarray(o[start:stop]))
                    for n, o in zip(self.output_names, outputs)
                ]
                responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
                start = stop
            return responses
        for a in arrays:
            outputs = self.session.run(self.output_names, dict(zip(self.input_names, a)))
            tensors = [pb_utils.Tensor(n, o) for n, o in zip(self.output_names, outputs)]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
        return responses

    def finalize(self):
        self.session = None
