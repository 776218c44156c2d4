// The node API: spawn, stop, status, list, batch, migrate and logs of supervised nodes. Reading needs
// a viewer token; changing an operator token. A pool-scoped token reaches only its pools' agents.
import type { sendUnaryData, ServerUnaryCall } from "@grpc/grpc-js";
import { toServiceError } from "../../common/errors.js";
import type { NodeServiceServer } from "../../gen/switchboard/v1/client.js";
import type { Principal } from "../auth.js";
import type { HubCore } from "../hub-core.js";

/**
 * A unary handler; `signal` fires when the caller goes away (cancelled, or its deadline passed), so that
 * a spawn nobody waits for any more is cancelled on its agent instead of left running unrecorded.
 */
function unary<Req, Res>(
  core: HubCore,
  min: "viewer" | "operator",
  fn: (req: Req, principal: Principal, signal: AbortSignal) => Promise<Res> | Res,
): (call: ServerUnaryCall<Req, Res>, cb: sendUnaryData<Res>) => void {
  return (call, cb) => {
    const gone = new AbortController();
    call.once("cancelled", () => gone.abort());
    core.auth
      .requireClient(call.metadata, min)
      .then((p) => fn(call.request, p, gone.signal))
      .then(
        (res) => cb(null, res),
        (err: unknown) => cb(toServiceError(err)),
      );
  };
}

export function nodeService(core: HubCore): NodeServiceServer {
  const n = core.nodes;
  return {
    spawnNode: unary(core, "operator", (req, p, signal) => n.spawn(p, req, signal)),
    stopNode: unary(core, "operator", (req, p) => n.stop(p, req)),
    getNodeStatus: unary(core, "viewer", (req, p) => n.status(p, req.nodeId)),
    listNodes: unary(core, "viewer", async (req, p) => ({ nodes: await n.list(p, req) })),
    spawnNodes: unary(core, "operator", async (req, p, signal) => ({
      items: await n.spawnMany(p, req.nodes, req.atomic, signal),
    })),
    stopNodes: unary(core, "operator", async (req, p) => ({ items: await n.stopMany(p, req.nodes) })),
    migrateNode: unary(core, "operator", (req, p) => n.migrate(p, req)),
    nodeLogs: unary(core, "viewer", (req, p) => n.logs(p, req)),
  };
}
