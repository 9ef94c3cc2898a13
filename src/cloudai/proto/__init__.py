"""Generated protobuf/gRPC stubs for `cluster.proto` (run scripts/gen_proto.sh)."""

from cloudai.proto import cluster_pb2 as pb
from cloudai.proto import cluster_pb2_grpc as rpc

SERVICE_NAME = "cluster.MasterWorker"

__all__ = ["SERVICE_NAME", "pb", "rpc"]
