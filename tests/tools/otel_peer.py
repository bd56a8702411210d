"""A real OpenTelemetry-instrumented HTTP client or backend for the trace
end-to-end test: spans go with OTLP/HTTP (protobuf) to the URL given.

    otel_peer.py backend OTLP_URL         prints its port, serves GET /work
    otel_peer.py client OTLP_URL PROXY HOST
                                          GET http://HOST/work through PROXY,
                                          prints the status and trace id
"""

import http.client
import http.server
import sys

from opentelemetry import propagate, trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor


def tracer(name, otlp):
    provider = TracerProvider(resource=Resource.create({"service.name": name}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=otlp)))
    trace.set_tracer_provider(provider)
    return provider, trace.get_tracer(name)


def backend(otlp):
    _, t = tracer("py-backend", otlp)

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            ctx = propagate.extract(dict(self.headers))
            with t.start_as_current_span("backend work", context=ctx, kind=trace.SpanKind.SERVER):
                body = b"worked"
                self.send_response(200)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()


def client(otlp, proxy, host):
    provider, t = tracer("py-client", otlp)
    proxy_host, proxy_port = proxy.rsplit(":", 1)
    with t.start_as_current_span("call api", kind=trace.SpanKind.CLIENT) as span:
        headers = {"Host": host}
        propagate.inject(headers)
        conn = http.client.HTTPConnection(proxy_host, int(proxy_port), timeout=30)
        conn.request("GET", "/work", headers=headers)
        resp = conn.getresponse()
        resp.read()
        trace_id = format(span.get_span_context().trace_id, "032x")
    provider.shutdown()
    print(resp.status, trace_id, resp.getheader("x-devmesh-trace-id"), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "backend":
        backend(sys.argv[2])
    else:
        client(sys.argv[2], sys.argv[3], sys.argv[4])
