"""A client of seed 003's GridAgent service (the agent's local API), with stubs generated from the seed's own
agent.proto text (test/python/seed003/agent.proto: no package, so its methods are /GridAgent/SpawnNode and the
rest), as the seed's grid master would call it. One call per run; prints exactly one JSON line on stdout, the
response (field names as in the proto) or the gRPC error, and exits 0 either way.
Usage: grid_agent_client.py --gen DIR --address HOST:PORT [--token T] spawn|stop|status|list [options]
"""

import argparse
import json
import sys


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Call one method of seed 003's GridAgent service.")
    p.add_argument("--gen", required=True, help="directory holding agent_pb2.py and agent_pb2_grpc.py (generate.sh)")
    p.add_argument("--address", required=True, help="the agent's local API, host:port")
    p.add_argument("--token", default="", help="sent as 'authorization: Bearer TOKEN'")
    p.add_argument("--timeout", type=float, default=30.0, help="deadline of the call in seconds")
    p.add_argument("method", choices=["spawn", "stop", "status", "list"])
    p.add_argument("--node-id", default="")
    p.add_argument("--storage-path", default="")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--memory-limit-mb", type=int, default=0)
    return p.parse_args()


def to_dict(msg) -> dict:
    """Every field of a response, defaults included, under its proto name (repeated messages as lists)."""
    out = {}
    for field in msg.DESCRIPTOR.fields:
        value = getattr(msg, field.name)
        if field.label == field.LABEL_REPEATED:
            out[field.name] = [to_dict(v) if hasattr(v, "DESCRIPTOR") else v for v in value]
        else:
            out[field.name] = to_dict(value) if hasattr(value, "DESCRIPTOR") else value
    return out


def main() -> int:
    args = parse_args()
    # The generated modules import each other by their bare names, so their directory goes on the path.
    sys.path.insert(0, args.gen)
    import grpc
    import agent_pb2
    import agent_pb2_grpc

    metadata = [("authorization", f"Bearer {args.token}")] if args.token else None
    with grpc.insecure_channel(args.address) as channel:
        stub = agent_pb2_grpc.GridAgentStub(channel)
        calls = {
            "spawn": lambda: stub.SpawnNode(
                agent_pb2.SpawnNodeRequest(
                    node_id=args.node_id,
                    storage_path=args.storage_path,
                    port=args.port,
                    memory_limit_mb=args.memory_limit_mb,
                ),
                timeout=args.timeout,
                metadata=metadata,
            ),
            "stop": lambda: stub.StopNode(
                agent_pb2.StopNodeRequest(node_id=args.node_id), timeout=args.timeout, metadata=metadata
            ),
            "status": lambda: stub.GetNodeStatus(
                agent_pb2.NodeStatusRequest(node_id=args.node_id), timeout=args.timeout, metadata=metadata
            ),
            "list": lambda: stub.ListNodes(agent_pb2.ListNodesRequest(), timeout=args.timeout, metadata=metadata),
        }
        try:
            answer = {"ok": True, "response": to_dict(calls[args.method]())}
        except grpc.RpcError as err:
            code = err.code()
            answer = {"ok": False, "code": code.name if code else "UNKNOWN", "details": err.details() or ""}
    print(json.dumps(answer), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
