"""What the public front lets through to Triton: the inference API, and requests Triton survives.

Triton's HTTP port also carries its admin API: shared-memory registration (the server, often
root, then writes model outputs into any ``/dev/shm`` file a client names, and reads inputs from
it past the body cap), logging and trace settings, model load and unload. Those stay on loopback;
the front answers 404 for them. An inference request whose JSON nests thousands of levels deep
crashes tritonserver 2.51 (SIGSEGV in its parser): six such 400 KB requests in a row used to
make the launcher give up for good, so the front refuses them before forwarding.
"""

from __future__ import annotations

import re

from asl_recognition.serving.limits import Refused
from asl_recognition.serving.step_names import STEP_SUFFIXES

_MODEL = r"/v2/models/[^/]+(?:/versions/[0-9]+)?"
# (method, path) pairs the front forwards: what tritonclient's inference calls use.
ALLOWED = (
    ("GET", re.compile(r"/v2|/v2/health/(?:live|ready)")),
    ("GET", re.compile(_MODEL + r"(?:/ready|/config|/stats)?")),
    ("POST", re.compile(_MODEL + r"/infer")),
    ("POST", re.compile(r"/v2/repository/index")),  # read-only: names and states of models
)
MAX_JSON_DEPTH = 64  # an inference request nests about 5 deep (inputs, data as nested lists)
HEADER_LENGTH = "inference-header-content-length"  # binary requests: the JSON part's length
# One string: from its quote to the closing one, or to the end of the body when it is never
# closed (a parser stops there too). Possessive (``*+``, ``++``): never backtracks and always
# matches, so each byte is read once. Its predecessor, ``"(?:[^"\\]|\\.)*"``, failed at every
# quote of an unclosed string and started again at the next one: a quote then 50 000 escaped
# quotes (100 KB) took 30 s in C, holding the GIL, and froze the whole front.
_STRING = re.compile(rb'"(?:[^"\\]++|\\.)*+(?:"|\\?\Z)', re.S)
_BRACKET = re.compile(rb"[\[\]{}]")


_STEP_INFER = re.compile(
    r"/v2/models/[^/]+(?:%s)(?:/versions/[0-9]+)?/infer" % "|".join(STEP_SUFFIXES)
)
# A JSON \u escape of an ASCII character: Triton's parser reads "shared\u005fmemory" as the key.
_ASCII_ESCAPE = re.compile(rb"\\u00([0-7][0-9A-Fa-f])")


def check_route(method: str, path: str) -> None:
    """404 for any path and method outside the inference API, and for inference on an
    ensemble's steps (a client calling ``<name>_metrics`` itself counted made-up predictions
    in the production metrics), before the body is read."""
    if not any(method == allowed and rule.fullmatch(path) for allowed, rule in ALLOWED):
        raise Refused(
            404,
            "not_served",
            f"{method} {path} is not served here: the public port carries inference, model "
            "metadata and health only",
        )
    if _STEP_INFER.fullmatch(path):
        raise Refused(
            404,
            "not_served",
            f"{method} {path} is not served here: that model is a step of an ensemble; call "
            "the ensemble",
        )


def check_encoding(encoding: str | None) -> None:
    """415 for a compressed body: Triton inflates gzip and deflate itself, with no bound, after
    the front's checks saw only the compressed bytes (883 bytes of gzip crashed it, 1 MiB took
    it to 2 GB)."""
    if encoding is not None and encoding.strip().lower() not in ("", "identity"):
        raise Refused(
            415,
            "encoded_body",
            f"request bodies with Content-Encoding {encoding[:40]!r} are not accepted here; "
            "send them uncompressed",
        )


def json_part(body: bytes, header_lengths: list[str]) -> bytes:
    """The request's JSON: the first ``Inference-Header-Content-Length`` bytes, or all of it.

    400 unless that header comes at most once, as plain digits: the checks must read what
    Triton parses, and the front forwards one copy, the last; a first copy of 10 hid a 400 KB
    nest of ``[`` behind a 10-byte head, and tritonserver crashed on it (SIGSEGV).
    """
    if not header_lengths:
        return body
    length, *more = header_lengths
    if more or not (length.isascii() and length.isdigit()):
        raise Refused(
            400,
            "bad_header_length",
            f"{HEADER_LENGTH} must be given once, as a number of bytes",
        )
    return body[: int(length)]


def check_infer_json(document: bytes) -> None:
    """400 for JSON nested deeper than :data:`MAX_JSON_DEPTH`, or naming shared memory (also
    spelt with ``\\u`` escapes, which Triton's parser decodes).

    Scanned, not parsed: strings are blanked first in one linear pass (brackets in them do not
    count; an unclosed string runs to the end), then only the brackets are walked, so a 32 MB
    body of numbers costs a regex pass, not a parse, whatever its quotes and backslashes.
    """
    if b"shared_memory" in _ASCII_ESCAPE.sub(lambda m: bytes([int(m[1], 16)]), document):
        raise Refused(
            400, "shared_memory", "shared-memory inputs and outputs are not accepted here"
        )
    depth = 0
    for bracket in _BRACKET.finditer(_STRING.sub(b'""', document)):
        depth += 1 if bracket.group() in (b"[", b"{") else -1
        if depth > MAX_JSON_DEPTH:
            raise Refused(
                400, "too_deep", f"the request's JSON nests deeper than {MAX_JSON_DEPTH} levels"
            )
