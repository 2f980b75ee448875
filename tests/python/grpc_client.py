"""A Python grpcio (gRPC core, BoringSSL) client of a Bronze node, knowing
nothing of Bronze but what server reflection tells it: no generated code.

Usage:
  grpc_client.py inspect TARGET CA CRT KEY
      Lists the services by reflection, calls bronze.v1.MachineService/Version
      with a request built from the reflected descriptors, and asks
      grpc.health.v1.Health/Check for the server and for MachineService.
  grpc_client.py call-each TARGET CA CRT KEY METHOD...
      Calls each METHOD (/package.Service/Method) with an empty request, in
      the streaming shape reflection reports for it, and records its status.

TARGET is host:port; CA, CRT and KEY are PEM files (the client's mTLS
credentials). Prints one JSON object on stdout; any failure to connect or to
reflect raises, so the script exits non-zero. Run by tests/tests/interop.rs.
"""

import argparse
import json
import sys

import grpc
from google.protobuf import descriptor_pool, json_format, message_factory
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

TIMEOUT = 10


def channel(args):
    def read(path):
        with open(path, "rb") as f:
            return f.read()

    credentials = grpc.ssl_channel_credentials(
        root_certificates=read(args.ca), private_key=read(args.key), certificate_chain=read(args.crt)
    )
    return grpc.secure_channel(args.target, credentials)


def inspect(args):
    with channel(args) as ch:
        database = ProtoReflectionDescriptorDatabase(ch)
        services = sorted(database.get_services())
        pool = descriptor_pool.DescriptorPool(database)
        method = pool.FindMethodByName("bronze.v1.MachineService.Version")
        request = message_factory.GetMessageClass(method.input_type)
        response = message_factory.GetMessageClass(method.output_type)
        version = ch.unary_unary(
            "/bronze.v1.MachineService/Version",
            request_serializer=request.SerializeToString,
            response_deserializer=response.FromString,
        )(request(), timeout=TIMEOUT)
        health = health_pb2_grpc.HealthStub(ch)
        statuses = {}
        for service in ["", "bronze.v1.MachineService"]:
            answer = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=TIMEOUT)
            statuses[service] = health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)
        return {
            "services": services,
            "version": json_format.MessageToDict(version, preserving_proto_field_name=True),
            "health": statuses,
        }


def call_each(args):
    results = {}
    with channel(args) as ch:
        pool = descriptor_pool.DescriptorPool(ProtoReflectionDescriptorDatabase(ch))
        for path in args.methods:
            service, name = path.lstrip("/").split("/")
            method = pool.FindMethodByName(f"{service}.{name}")
            empty = b""  # an empty message of any type
            try:
                if method.client_streaming and method.server_streaming:
                    next(ch.stream_stream(path)(iter([empty]), timeout=TIMEOUT))
                elif method.client_streaming:
                    ch.stream_unary(path)(iter([empty]), timeout=TIMEOUT)
                elif method.server_streaming:
                    next(ch.unary_stream(path)(empty, timeout=TIMEOUT))
                else:
                    ch.unary_unary(path)(empty, timeout=TIMEOUT)
                results[path] = {"code": "OK", "details": ""}
            except grpc.RpcError as error:
                results[path] = {"code": error.code().name, "details": error.details()}
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["inspect", "call-each"])
    for name in ["target", "ca", "crt", "key"]:
        parser.add_argument(name)
    parser.add_argument("methods", nargs="*")
    args = parser.parse_args()
    if args.command == "call-each" and not args.methods:
        sys.exit("call-each needs at least one METHOD")
    result = inspect(args) if args.command == "inspect" else call_each(args)
    print(json.dumps(result, indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
