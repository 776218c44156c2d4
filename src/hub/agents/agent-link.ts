// One agent's Connect stream, from its Hello to its end: the Hello opens (or resumes) a session, and
// each later message goes to the part of the hub it concerns: credits to dispatch, task events to the
// task's lifecycle, node reports to the node orchestrator, input windows to the task's input.
import type { ServerDuplexStream } from "@grpc/grpc-js";
import { Code, SwitchboardError } from "../../common/errors.js";
import type { Logger } from "../../common/logger.js";
import type { AgentMessage, Hello, HubMessage } from "../../gen/switchboard/v1/agent.js";
import type { AgentRegistry } from "./agent-registry.js";
import type { AgentSession } from "./agent-session.js";
import type { Principal, TokenAuthority } from "../auth.js";
import type { HubConfig } from "../config.js";
import type { NodeOrchestrator } from "../nodes/node-orchestrator.js";
import type { SessionLifecycle } from "./session-lifecycle.js";
import type { TaskDispatch } from "../tasks/task-dispatch.js";
import type { TaskInputs } from "../tasks/task-input.js";
import type { TaskLifecycle } from "../tasks/task-lifecycle.js";
import type { TaskTable } from "../tasks/task-table.js";

const HELLO_TIMEOUT_MS = 10_000;

export class AgentLink {
  constructor(
    private readonly config: HubConfig,
    private readonly auth: TokenAuthority,
    private readonly logger: Logger,
    private readonly agents: AgentRegistry,
    private readonly tasks: TaskTable,
    private readonly sessions: SessionLifecycle,
    private readonly dispatch: TaskDispatch,
    private readonly lifecycle: TaskLifecycle,
    private readonly inputs: TaskInputs,
    private readonly nodes: NodeOrchestrator,
  ) {}

  /**
   * Serve one agent's Connect stream from Hello to its end (authenticated: by a bridge that did it;
   * resumable false: a bridge whose agents cannot resume a session, so their tasks end with the stream).
   */
  connect(
    call: ServerDuplexStream<AgentMessage, HubMessage>,
    authenticated?: Principal,
    opts: { resumable?: boolean } = {},
  ): void {
    if (authenticated) {
      this.serve(call, authenticated, opts);
      return;
    }
    // Until the token is checked no listener is attached: what the agent sends waits in the stream.
    this.auth.requireAgent(call.metadata).then(
      (p) => {
        if (!call.cancelled) this.serve(call, p, opts);
      },
      (err: unknown) => endCall(call, err),
    );
  }

  private serve(
    call: ServerDuplexStream<AgentMessage, HubMessage>,
    principal: Principal,
    opts: { resumable?: boolean },
  ): void {
    let session: AgentSession | undefined;
    // While the Hello's admission reads the store: the messages that follow it wait here, in order.
    let admitting: AgentMessage[] | undefined;
    // The stream ended while the Hello was admitted: no session opens for it.
    let gone = false;
    const helloTimer = setTimeout(
      () =>
        endCall(
          call,
          new SwitchboardError(
            Code.INVALID_ARGUMENT,
            `no Hello within ${HELLO_TIMEOUT_MS / 1000}s: the first message must be Hello`,
          ),
        ),
      HELLO_TIMEOUT_MS,
    );
    const refuse = (err: unknown): void => {
      clearTimeout(helloTimer);
      this.logger.warn({ agent_id: session?.agentId, err: (err as Error).message }, "agent stream refused");
      if (session) this.sessions.close(session, (err as Error).message);
      endCall(call, err);
    };
    const onMessage = (s: AgentSession, msg: AgentMessage): void => {
      try {
        if (msg.body?.$case === "batch") {
          for (const m of msg.body.value.messages) {
            if (m.body?.$case === "batch" || m.body?.$case === "hello") {
              throw new SwitchboardError(Code.INVALID_ARGUMENT, `a batch may not hold ${m.body.$case}`);
            }
            this.route(s, m);
          }
        } else {
          this.route(s, msg);
        }
        // What this message brought is acknowledged in the same write as the replies to it.
        if (s.eventsReceived !== s.eventsAcked && !s.closed) s.sendAck();
      } catch (err) {
        refuse(err);
      }
    };
    const admit = async (hello: Hello): Promise<void> => {
      admitting = [];
      try {
        const admission = await this.sessions.admit(principal, hello);
        if (gone) return;
        if (this.auth.wasRevoked(principal.tokenId)) {
          throw new SwitchboardError(Code.UNAUTHENTICATED, `token ${principal.name} was revoked`);
        }
        session = this.sessions.open(call, principal, hello, admission);
        if (opts.resumable === false) session.resumable = false;
      } catch (err) {
        refuse(err);
        return;
      } finally {
        const queued = admitting;
        admitting = undefined;
        if (session) for (const m of queued) onMessage(session, m);
      }
    };
    call.on("data", (msg: AgentMessage) => {
      if (admitting) {
        admitting.push(msg);
        return;
      }
      if (session) {
        onMessage(session, msg);
        return;
      }
      if (msg.body?.$case !== "hello") {
        refuse(
          new SwitchboardError(Code.INVALID_ARGUMENT, "the first message on the agent stream must be Hello"),
        );
        return;
      }
      clearTimeout(helloTimer);
      void admit(msg.body.value);
    });
    const onGone = (why: string) => () => {
      clearTimeout(helloTimer);
      if (admitting) gone = true;
      if (session) this.sessions.streamGone(session, why);
    };
    call.on("end", () => {
      onGone("the agent closed its stream")();
      if (session) session.end();
      else if (!gone)
        endCall(call, new SwitchboardError(Code.INVALID_ARGUMENT, "the stream ended before Hello"));
    });
    call.on("error", (e: Error) => onGone(`stream error: ${e.message}`)());
    call.on("cancelled", onGone("the connection dropped"));
    call.on("close", onGone("the connection closed"));
  }

  private route(s: AgentSession, msg: AgentMessage): void {
    // A session that was closed (taken over, revoked, timed out) can no longer act.
    if (s.closed) return;
    s.lastSeenAt = Date.now();
    const body = msg.body;
    switch (body?.$case) {
      case "credits":
        if (s.grant(body.value.grantedTotal)) this.dispatch.dispatch(s);
        return;
      case "heartbeat": {
        s.lastHeartbeat = body.value;
        if (body.value.nodes.length > 0) this.nodes.onHeartbeat(s, body.value.nodes);
        // No reply: the agent ignores hub heartbeats, and the probe sent once per interval already
        // reaches it; at 10,000 agents a reply to each would be 2,000 messages a second for nothing.
        this.sessions.reevaluate(s, Date.now());
        this.agents.persistSometimes(s);
        return;
      }
      case "event": {
        const ev = body.value;
        const bytes = ev.event?.$case === "output" ? ev.event.value.data.length : 0;
        if (s.noteEvent(bytes)) s.sendAck();
        this.lifecycle.onAgentEvent(s, ev);
        return;
      }
      case "nodeReply":
        this.nodes.onReply(s, body.value);
        return;
      case "inputWindow": {
        const t = this.tasks.get(body.value.taskId);
        if (t && !t.terminal && t.agentId === s.agentId)
          this.inputs.inputFor(t).grant(body.value.bytes, body.value.received, body.value.grantedTotal);
        return;
      }
      case "probeReply": {
        if (s.probeAnswered(body.value.id)) this.sessions.reevaluate(s, Date.now());
        return;
      }
      case "goodbye":
        s.leaving = true;
        s.evaluate(Date.now(), this.config.heartbeatIntervalMs);
        this.logger.info({ agent_id: s.agentId, reason: body.value.reason }, "agent is leaving");
        return;
      case "hello":
        this.logger.warn({ agent_id: s.agentId }, "ignoring a second Hello on an open session");
        return;
      default:
        return;
    }
  }
}

function endCall(call: ServerDuplexStream<AgentMessage, HubMessage>, err: unknown): void {
  const code = err instanceof SwitchboardError ? err.code : Code.INTERNAL;
  const details = err instanceof Error ? err.message : String(err);
  try {
    call.emit("error", Object.assign(new Error(details), { code, details }));
  } catch {
    // the stream is already gone
  }
}
