"""One unary call with grpcio, the reference gRPC client, to a method of any service.

Usage: client.py HOST:PORT /package.Service/Method
Prints one JSON object: the status code's number, its details, and the x-sidecar-error flag
of the trailing metadata (null when absent). Exits 0 whatever the call's status.
"""

import json
import sys

import grpc


def main() -> None:
    target, method = sys.argv[1], sys.argv[2]
    # No proxy from the environment, and no retries of grpcio's own: what the caller sees is
    # what the sidecars answered.
    options = [("grpc.enable_http_proxy", 0), ("grpc.enable_retries", 0)]
    with grpc.insecure_channel(target, options=options) as channel:
        call = channel.unary_unary(method)
        try:
            _, outcome = call.with_call(b"ping", timeout=20)
            code, details = outcome.code(), outcome.details()
            metadata = outcome.trailing_metadata()
        except grpc.RpcError as error:
            code, details = error.code(), error.details()
            metadata = error.trailing_metadata()
    flag = dict(metadata or ()).get("x-sidecar-error")
    print(json.dumps({"code": code.value[0], "details": details, "flag": flag}))


if __name__ == "__main__":
    main()
