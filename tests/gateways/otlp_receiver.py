"""A tiny OTLP/HTTP receiver for the gateway suite: accepts OTLP/JSON on
POST /v1/traces and appends each span, one JSON line
{"trace_id", "span_id", "parent_span_id", "name"}, to a file.

Run: python3 tests/gateways/otlp_receiver.py PORT SPANS_FILE
Python's standard library only (no collector needed in CI).
"""

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOCK = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    spans_file = ""

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        if self.path.split("?")[0] != "/v1/traces":
            self.answer(404, b'{"error":"only /v1/traces"}')
            return
        content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if content_type != "application/json":
            # Protobuf (or anything else): not what the suite asks for.
            self.answer(415, b'{"error":"OTLP/JSON only"}')
            return
        try:
            export = json.loads(body or b"{}")
        except ValueError:
            self.answer(400, b'{"error":"not JSON"}')
            return
        lines = []
        for resource_spans in export.get("resourceSpans") or []:
            for scope_spans in resource_spans.get("scopeSpans") or []:
                for span in scope_spans.get("spans") or []:
                    lines.append(
                        json.dumps(
                            {
                                "trace_id": span.get("traceId", ""),
                                "span_id": span.get("spanId", ""),
                                "parent_span_id": span.get("parentSpanId", ""),
                                "name": span.get("name", ""),
                            }
                        )
                    )
        if lines:
            with LOCK, open(self.spans_file, "a", encoding="utf-8") as out:
                out.write("".join(line + "\n" for line in lines))
        self.answer(200, b"{}")

    def answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        sys.stderr.write("otlp_receiver: " + (format % args) + "\n")


def main() -> None:
    port = int(sys.argv[1])
    Handler.spans_file = sys.argv[2]
    open(Handler.spans_file, "a", encoding="utf-8").close()
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.serve_forever()


if __name__ == "__main__":
    main()
