"""A client of seed 000's contract, as the seed's Django side would be: one ClientService.SendCommand.

Prints exactly one JSON line on stdout, the response or the gRPC error, and exits 0 either way so that
a test can parse what the hub answered (usage mistakes exit 2, as argparse does). With --summary the
json field is replaced by its size, its row count and its last row, for results too large to pass on.
Usage: seed_client.py --gen DIR --address HOST:PORT [--token T] --agent-id ID --database DB --query SQL
"""

import argparse
import json
import sys
import time

# The seed server's channel options: messages up to 2 GB - 1 both ways (its results travel as one message).
SEED_CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", 2147483647),
    ("grpc.max_receive_message_length", 2147483647),
]


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Call seed 000's ClientService.SendCommand once.")
    p.add_argument("--gen", required=True, help="directory holding app_pb2.py and app_pb2_grpc.py (generate.sh)")
    p.add_argument("--address", required=True, help="the hub's host:port")
    p.add_argument("--token", default="", help="sent as 'authorization: Bearer TOKEN'; omit for tokenless hubs")
    p.add_argument("--agent-id", required=True, help="the agent group (pool) that runs the query")
    p.add_argument("--database", required=True, help="the datasource (or driver) name")
    p.add_argument("--query", required=True, help="the SQL statement")
    p.add_argument("--tbl-name", default="", help="a table whose description comes back in meta_data")
    p.add_argument("--timeout", type=float, default=30.0, help="deadline of the call in seconds")
    p.add_argument("--summary", action="store_true", help="print json_bytes, rows and last_row instead of json")
    return p.parse_args()


def main() -> int:
    args = parse_args()
    # The generated modules import each other by their bare names, so their directory goes on the path.
    sys.path.insert(0, args.gen)
    import grpc
    import app_pb2
    import app_pb2_grpc

    metadata = [("authorization", f"Bearer {args.token}")] if args.token else None
    request = app_pb2.CommandRequest(
        agent_id=args.agent_id, database=args.database, query=args.query, tbl_name=args.tbl_name
    )
    started = time.monotonic()
    with grpc.insecure_channel(args.address, options=SEED_CHANNEL_OPTIONS) as channel:
        stub = app_pb2_grpc.ClientServiceStub(channel)
        try:
            res = stub.SendCommand(request, timeout=args.timeout, metadata=metadata)
            answer = {"ok": True, "json": res.json, "message": res.message, "meta_data": res.meta_data}
            if args.summary:
                rows = json.loads(res.json) if res.json else []
                del answer["json"]
                answer.update(
                    json_bytes=len(res.json.encode("utf-8")),
                    rows=len(rows),
                    last_row=rows[-1] if rows else None,
                )
        except grpc.RpcError as err:
            code = err.code()
            answer = {"ok": False, "code": code.name if code else "UNKNOWN", "details": err.details() or ""}
    answer["seconds"] = round(time.monotonic() - started, 3)
    print(json.dumps(answer), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
