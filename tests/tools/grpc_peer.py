"""A real gRPC server and client (grpcio) for devmesh's end-to-end tests.

No .proto and no protoc: generic handlers with identity (bytes)
serializers. Methods of the service `devmesh.test.Echo`:

  Unary(bytes) -> b"echo:" + bytes
  Stream(bytes "n") -> n messages b"item-0" .. b"item-<n-1>"
  Missing(bytes) -> aborts with NOT_FOUND "no such thing: <bytes>"

Usage:
  grpc_peer.py server            prints the port, serves until stdin closes
  grpc_peer.py client HOST:PORT AUTHORITY
                                 runs every call through HOST:PORT with
                                 :authority AUTHORITY, prints one JSON line
"""

import json
import sys
from concurrent import futures

import grpc

SERVICE = "devmesh.test.Echo"


def ident(b):
    return b


def unary(request, context):
    return b"echo:" + request


def stream(request, context):
    for i in range(int(request.decode())):
        yield f"item-{i}".encode()


def missing(request, context):
    context.abort(grpc.StatusCode.NOT_FOUND, f"no such thing: {request.decode()}")


def serve():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    handlers = {
        "Unary": grpc.unary_unary_rpc_method_handler(
            unary, request_deserializer=ident, response_serializer=ident
        ),
        "Stream": grpc.unary_stream_rpc_method_handler(
            stream, request_deserializer=ident, response_serializer=ident
        ),
        "Missing": grpc.unary_unary_rpc_method_handler(
            missing, request_deserializer=ident, response_serializer=ident
        ),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(port, flush=True)
    sys.stdin.read()
    server.stop(0)


def client(target, authority):
    options = [("grpc.default_authority", authority), ("grpc.enable_http_proxy", 0)]
    out = {}
    with grpc.insecure_channel(target, options=options) as channel:
        call = channel.unary_unary(
            f"/{SERVICE}/Unary", request_serializer=ident, response_deserializer=ident
        )
        out["unary"] = call(b"hello", timeout=20).decode()
        # Several calls share the one HTTP/2 connection.
        out["unary_many"] = [call(str(i).encode(), timeout=20).decode() for i in range(20)]
        call = channel.unary_stream(
            f"/{SERVICE}/Stream", request_serializer=ident, response_deserializer=ident
        )
        out["stream"] = [m.decode() for m in call(b"5", timeout=20)]
        call = channel.unary_unary(
            f"/{SERVICE}/Missing", request_serializer=ident, response_deserializer=ident
        )
        try:
            call(b"x", timeout=20)
            out["missing"] = {"code": "OK"}
        except grpc.RpcError as e:
            out["missing"] = {"code": e.code().name, "details": e.details()}
        call = channel.unary_unary(
            "/devmesh.test.Nope/Gone", request_serializer=ident, response_deserializer=ident
        )
        try:
            call(b"x", timeout=20)
            out["unimplemented"] = {"code": "OK"}
        except grpc.RpcError as e:
            out["unimplemented"] = {"code": e.code().name}
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["server"]:
        serve()
    elif sys.argv[1:2] == ["client"] and len(sys.argv) == 4:
        client(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)
