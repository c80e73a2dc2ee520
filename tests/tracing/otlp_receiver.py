"""A minimal real OTLP trace receiver, run as its own process by the integration tests.

It listens on loopback for OTLP/HTTP (``POST /v1/traces``, protobuf, optionally gzip) and
OTLP/gRPC (``TraceService/Export``), decodes each ``ExportTraceServiceRequest`` with the
official opentelemetry-proto classes, and appends one JSON line per span to ``--out``::

    {"transport": "http", "headers": {...}, "resource": {...}, "trace_id": "…", "span_id": "…",
     "parent_span_id": "…", "name": "chat big", "kind": "SPAN_KIND_CLIENT",
     "attributes": {...}, "events": [...], "status": {"code": 2, "message": "…"}}

When both servers listen it writes ``{"http": PORT, "grpc": PORT}`` to ``--ready``.

    python otlp_receiver.py --out spans.jsonl --ready ports.json
"""

from __future__ import annotations

import argparse
import gzip
import json
import signal
import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

_lock = threading.Lock()


def _value(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return _attrs(v.kvlist_value.values)
    if kind == "bytes_value":
        return v.bytes_value.hex()
    return getattr(v, kind) if kind else None


def _attrs(kvs: Any) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in kvs if isinstance(kv, KeyValue)}


def _records(
    req: trace_service_pb2.ExportTraceServiceRequest, transport: str, headers: dict[str, str]
) -> list[dict[str, Any]]:
    out = []
    for rs in req.resource_spans:
        resource = _attrs(rs.resource.attributes)
        for ss in rs.scope_spans:
            for span in ss.spans:
                out.append(
                    {
                        "transport": transport,
                        "headers": headers,
                        "resource": resource,
                        "scope": ss.scope.name,
                        "trace_id": span.trace_id.hex(),
                        "span_id": span.span_id.hex(),
                        "parent_span_id": span.parent_span_id.hex(),
                        "name": span.name,
                        "kind": Span.SpanKind.Name(span.kind),
                        "attributes": _attrs(span.attributes),
                        "events": [
                            {"name": e.name, "attributes": _attrs(e.attributes)}
                            for e in span.events
                        ],
                        "status": {"code": span.status.code, "message": span.status.message},
                    }
                )
    return out


class _Sink:
    def __init__(self, path: Path):
        self.path = path

    def write(self, records: list[dict[str, Any]]) -> None:
        with _lock, self.path.open("a", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in records)


def _http_handler(sink: _Sink) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            if self.path != "/v1/traces":
                self.send_error(404)
                return
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            req = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
            headers = {k.lower(): v for k, v in self.headers.items()}
            sink.write(_records(req, "http", headers))
            reply = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

    return Handler


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, sink: _Sink):
        self.sink = sink

    def Export(self, request: Any, context: grpc.ServicerContext) -> Any:
        headers = {k: v for k, v in context.invocation_metadata()}
        self.sink.write(_records(request, "grpc", headers))
        return trace_service_pb2.ExportTraceServiceResponse()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--ready", type=Path, required=True)
    args = parser.parse_args()
    sink = _Sink(args.out)
    http = ThreadingHTTPServer(("127.0.0.1", 0), _http_handler(sink))
    threading.Thread(target=http.serve_forever, daemon=True).start()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_TraceService(sink), server)
    grpc_port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    tmp = args.ready.with_suffix(".tmp")
    tmp.write_text(json.dumps({"http": http.server_address[1], "grpc": grpc_port}))
    tmp.replace(args.ready)  # atomic: the test never reads a half-written file
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    server.stop(grace=1)
    http.shutdown()


if __name__ == "__main__":
    main()
