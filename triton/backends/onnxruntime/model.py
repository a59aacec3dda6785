"""Local stand-in for Triton's onnxruntime backend (a Python-based backend).

The tritonserver binary bundled in the ``nvidia-pytriton`` wheel carries only the Python backend.
Triton's documented "Python-based backends" mechanism loads ``<backend-dir>/onnxruntime/model.py``
for every model whose config says ``platform: "onnxruntime_onnx"`` / ``backend: "onnxruntime"``,
so the generated repository loads here unchanged and in the production image (which has the real
C++ backend). This file is for local runs and tests only; it never goes into a Docker image.

Like the real backend (onnxruntime_backend r24.10, ``ValidateInputs``/``ValidateOutputs`` and
the session-option parsing), it refuses at load any config that disagrees with the ONNX graph
(tensor names, data types, dims, batch dimension; output dims compared exactly, -1 included;
an input's ``reshape`` instead of its dims), an unknown execution accelerator, an unknown
TensorRT parameter, and parameter values the real backend cannot parse. It may be stricter,
never looser: otherwise a config would load READY here and fail in production.
"""

import json
import os

import numpy as np

try:
    import onnxruntime as ort
    import triton_python_backend_utils as pb_utils
except ImportError:  # imported outside Triton, to run check_config/check_options alone
    ort = pb_utils = None

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


def _dims_errors(kind, name, dims, graph_dims, max_batch_size, exact):
    """The real backend's CompareDimsSupported: -1 in the graph is a wildcard for inputs only."""
    if not graph_dims:
        # A scalar graph tensor: every configured dim must be 1.
        if any(d != 1 for d in dims):
            return [f"{kind} '{name}' is a scalar in the ONNX graph; config dims {dims}"]
        return []
    batching = max_batch_size > 0
    if batching and graph_dims[0] != -1:
        return [
            f"{kind} '{name}': config has max_batch_size {max_batch_size} but the ONNX "
            f"graph's first dimension is {graph_dims[:1]} (not a dynamic batch dimension)"
        ]
    full = [-1, *dims] if batching else list(dims)
    if len(full) == len(graph_dims) and all(
        d == g or (not exact and g == -1) for d, g in zip(full, graph_dims)
    ):
        return []
    return [
        f"{kind} '{name}': config dims {list(dims)} (batch dimension excluded: {batching}) "
        f"do not match the ONNX graph's {graph_dims[1:] if batching else graph_dims}"
    ]


def check_config(config, graph_inputs, graph_outputs, model_path):
    """Return a list of human-readable mismatches between a Triton config and the ONNX graph."""
    errors = []
    max_batch_size = int(config.get("max_batch_size", 0))
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
            source = tensor.get("reshape", tensor) if kind == "input" else tensor
            key = "shape" if source is not tensor else "dims"
            dims = [int(d) for d in source.get(key, [])]
            errors += _dims_errors(
                kind, name, dims, _graph_dims(node.shape or []), max_batch_size, kind == "output"
            )
        if must_cover:
            missing = sorted(set(by_name) - {t["name"] for t in declared})
            if missing:
                errors.append(f"the ONNX graph needs {kind}s {missing} that the config lacks")
    return errors


def _is_int(value):
    try:
        int(value)
        return True
    except ValueError:
        return False


def _is_bool(value):
    return value.lower() in ("true", "false", "1", "0", "on", "off")


# TensorRT accelerator parameters the real backend knows, with the check of their value.
TRT_PARAMETERS = {
    "precision_mode": lambda v: v in ("FP32", "FP16", "INT8"),
    "max_workspace_size_bytes": lambda v: v.isdigit(),
    "int8_calibration_table_name": lambda v: True,
    "int8_use_native_calibration_table": _is_bool,
    "trt_engine_cache_path": lambda v: True,
    "trt_engine_cache_prefix": lambda v: True,
    "trt_timing_cache_path": lambda v: True,
    "trt_tactic_sources": lambda v: True,
    "trt_extra_plugin_lib_paths": lambda v: True,
    "trt_profile_min_shapes": lambda v: True,
    "trt_profile_max_shapes": lambda v: True,
    "trt_profile_opt_shapes": lambda v: True,
    "trt_ep_context_file_path": lambda v: True,
}
TRT_PARAMETERS.update(
    {
        k: _is_int
        for k in (
            "trt_max_partition_iterations",
            "trt_min_subgraph_size",
            "trt_dla_core",
            "trt_builder_optimization_level",
            "trt_auxiliary_streams",
            "trt_ep_context_embed_mode",
        )
    }
)
TRT_PARAMETERS.update(
    {
        k: _is_bool
        for k in (
            "trt_dla_enable",
            "trt_engine_cache_enable",
            "trt_dump_subgraphs",
            "trt_force_sequential_engine_build",
            "trt_context_memory_sharing_enable",
            "trt_layer_norm_fp32_fallback",
            "trt_timing_cache_enable",
            "trt_force_timing_cache",
            "trt_detailed_build_log",
            "trt_build_heuristics_enable",
            "trt_sparsity_enable",
            "trt_cuda_graph_enable",
            "trt_dump_ep_context_model",
        )
    }
)
# Model parameters the real backend parses; any other key is ignored there (and here).
MODEL_PARAMETERS = {
    "execution_mode": lambda v: _is_int(v) and int(v) in (0, 1),
    "intra_op_thread_count": _is_int,
    "inter_op_thread_count": _is_int,
    "enable_mem_arena": _is_bool,
    "enable_mem_pattern": _is_bool,
    "cudnn_conv_algo_search": lambda v: _is_int(v) and int(v) in (0, 1, 2),
    "arena_extend_strategy": lambda v: _is_int(v) and int(v) in (0, 1),
}


def _accelerator_errors(accelerators, kind, known):
    errors = []
    for accelerator in accelerators:
        name = accelerator.get("name", "")
        params = accelerator.get("parameters", {}) or {}
        if name not in known:
            errors.append(f"unknown {kind} execution accelerator '{name}' (known: {known})")
        elif name == "tensorrt":
            for key, value in params.items():
                check = TRT_PARAMETERS.get(key)
                if check is None:
                    errors.append(f"unknown parameter '{key}' for the TensorRT accelerator")
                elif not check(str(value)):
                    errors.append(f"TensorRT accelerator parameter {key}={value!r} is invalid")
    return errors


def check_options(config):
    """Optimization and parameters the real backend would refuse (it may accept fewer)."""
    accelerators = config.get("optimization", {}).get("execution_accelerators", {}) or {}
    errors = _accelerator_errors(
        accelerators.get("gpu_execution_accelerator", []), "GPU", ["tensorrt", "cuda"]
    )
    errors += _accelerator_errors(
        accelerators.get("cpu_execution_accelerator", []), "CPU", ["openvino"]
    )
    for key, value in (config.get("parameters", {}) or {}).items():
        text = value.get("string_value", "") if isinstance(value, dict) else str(value)
        check = MODEL_PARAMETERS.get(key)
        if check is not None and not check(text):
            errors.append(f"parameter {key}={text!r} is invalid")
    return errors


class TritonPythonModel:
    def initialize(self, args):
        self.config = json.loads(args["model_config"])
        name = self.config["name"]
        filename = self.config.get("default_model_filename") or "model.onnx"
        path = os.path.join(args["model_repository"], args["model_version"], filename)
        if not os.path.isfile(path):
            raise pb_utils.TritonModelException(f"model '{name}': no ONNX file at {path}")
        errors = check_options(self.config)
        if errors:
            raise pb_utils.TritonModelException(
                f"model '{name}': config.pbtxt has options the onnxruntime backend refuses: "
                + "; ".join(errors)
            )
        options = ort.SessionOptions()
        params = {
            k: v.get("string_value", "") for k, v in self.config.get("parameters", {}).items()
        }
        for key, attribute in (
            ("intra_op_thread_count", "intra_op_num_threads"),
            ("inter_op_thread_count", "inter_op_num_threads"),
        ):
            if params.get(key) and int(params[key]) > 0:
                setattr(options, attribute, int(params[key]))
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
