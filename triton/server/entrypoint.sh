#!/bin/sh
# The server image's entrypoint, after NVIDIA's: tritonserver with its admin protocols (shared
# memory, trace, logging) behind ASL_TRITON_ADMIN_KEY, or closed without it
# (asl_recognition/serving/admin_api.py). PYTHONPATH reaches that module only: it execs
# tritonserver without it, and without the key in its environment.
# First, the repository must be what its last build recorded
# (asl_recognition/serving/repo_manifest.py): a changed file is refused here, never served.
set -eu
PYTHONPATH="$(dirname "$0")" python3 -m asl_recognition.serving.repo_manifest check "$@"
PYTHONPATH="$(dirname "$0")" exec python3 -m asl_recognition.serving.admin_api "$@"
