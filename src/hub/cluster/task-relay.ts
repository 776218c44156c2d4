// Tasks across the hubs of a cluster. A client on hub A asks for agent X, which is connected to hub
// B: A sends the submission over NATS to the subject of X, on which only the hub that holds X
// listens (NATS is the routing table: no hub holds X, no responder, and A goes on as a hub alone
// would). B authenticates the caller's token itself (A names it, and the message is signed with
// the cluster's key), runs the task as its own (it records, dispatches and ends it), and relays the
// task's events to a subject of A's, in order, numbered as B numbers them. A holds a proxy of the
// task in its task table, so that its clients run, watch, wait for and cancel it as a task of their
// own hub; A never writes it.
//
// Flow control is end to end: B's relay counts as one of the task's watchers on B, and it takes
// output as consumed only when A says its own watchers consumed it (A's proxy grants a window as
// a task does to its agent). A slow client on A holds back the agent on B; no hub buffers more
// than a window per task. B relays the Finished event once the task's last writes are committed,
// so that A reads the result and the output from the store as B left them.
import { randomUUID } from "node:crypto";
import type { Msg, NatsConnection, Subscription } from "@nats-io/transport-node";
import { Code, SwitchboardError } from "../../common/errors.js";
import type { Logger } from "../../common/logger.js";
import { stateFromWire, stateToWire, type TaskStateName } from "../../common/task-state.js";
import { SubmitRequest } from "../../gen/switchboard/v1/client.js";
import { OutputStream, TaskEvent, TaskSpec } from "../../gen/switchboard/v1/task.js";
import type { Principal, TokenAuthority } from "../auth.js";
import type { SchedTask, Target } from "../scheduler.js";
import type { Store, TaskRecord } from "../store/index.js";
import { errorMessage } from "../store/errors.js";
import { LiveTask, type Watcher } from "../tasks/live-task.js";
import type { TaskTable } from "../tasks/task-table.js";
import { MessageSigner, Reassembly, subjectToken } from "./signed-messages.js";

/** What the relay needs of its hub. */
export interface RelayHost {
  readonly tasks: TaskTable;
  readonly store: Store;
  readonly auth: TokenAuthority;
  /** Output a task may send ahead of its slowest watcher (hub.output_window_bytes). */
  readonly outputWindowBytes: number;
  submit(p: Principal, req: SubmitRequest): Promise<LiveTask>;
  /** This hub's free credits for a task (undefined: no agent here may run it). */
  capacity(t: SchedTask): number | undefined;
  /** PERMISSION_DENIED when the principal's pools do not reach the task. */
  assertTaskVisible(p: Principal, taskId: string): Promise<void>;
  cancel(p: Principal, taskId: string, reason: string): Promise<TaskStateName>;
}

/** How long a hub waits for another to answer a submission or a cancel. */
const REQUEST_TIMEOUT_MS = 15_000;

/** Asked of every hub: what it could give a task of a pool or labels. */
interface OfferQuestion {
  task: SchedTask;
}

/** How long a hub waits for the others' offers before it picks among those that came. */
const OFFER_WAIT_MS = 250;
/** Offers serve further tasks of the same target for this long (each taking one of their credits). */
const OFFER_TTL_MS = 100;

/** A watch of a task another hub runs: its events from the first, to the relay subject. */
interface WatchMessage {
  tokenId: string;
  relay: string;
  hub: string;
  window: number;
  taskId: string;
}

interface SubmitMessage {
  tokenId: string;
  /** The subject the events go to. */
  relay: string;
  /** The relaying hub: its control subject takes the grants' answers, and its loss ends the relay. */
  hub: string;
  /** The proxy's output window: output counts as consumed once granted beyond it. */
  window: number;
  request: string; // SubmitRequest, base64
}

type Answer<T> = ({ ok: true } & T) | { ok: false; code: number; message: string };

interface GrantMessage {
  taskId: string;
  relay: string;
  grantedTotal: number;
}

interface CancelMessage {
  taskId: string;
  tokenId: string;
  reason: string;
}

const encoder = new TextEncoder();
const json = (v: unknown): Uint8Array => encoder.encode(JSON.stringify(v));

function parse<T>(data: Uint8Array): T | undefined {
  try {
    return JSON.parse(Buffer.from(data).toString("utf8")) as T;
  } catch {
    return undefined;
  }
}

export class TaskRelay {
  private readonly agentSubs = new Map<string, Subscription>();
  /** This hub serving another's client: by relay subject. */
  private readonly serving = new Map<string, RelayWatcher>();
  /** This hub's proxies of tasks on other hubs: by task id. */
  private readonly proxies = new Map<string, Proxy>();
  /** Follows being opened, by task id: two watchers at once open one. */
  private readonly following = new Map<string, Promise<LiveTask | undefined>>();
  /** The offers last heard per target (see forwardToBest). */
  private readonly recentOffers = new Map<string, { at: number; list: { hub: string; free: number }[] }>();
  private ctl: Subscription | undefined;
  private offers: Subscription | undefined;

  constructor(
    private readonly nc: NatsConnection,
    private readonly signer: MessageSigner,
    /** The cluster's subject prefix. */
    private readonly prefix: string,
    private readonly hubId: string,
    private readonly host: RelayHost,
    private readonly logger: Logger,
  ) {}

  start(): void {
    const offers = `${this.prefix}.offers`;
    this.offers = this.nc.subscribe(offers, {
      callback: (err, msg) => {
        if (!err) this.onOffer(offers, msg);
      },
    });
    const subject = this.ctlSubject(this.hubId);
    this.ctl = this.nc.subscribe(subject, {
      callback: (err, msg) => {
        if (!err) void this.onControl(subject, msg);
      },
    });
  }

  /** The hub holds agent X now (its session, connected or held for a resume): submissions to X come here. */
  agentHere(agentId: string): void {
    if (this.agentSubs.has(agentId)) return;
    const subject = this.agentSubject(agentId);
    this.agentSubs.set(
      agentId,
      this.nc.subscribe(subject, {
        callback: (err, msg) => {
          if (!err) void this.onAgentRequest(subject, msg);
        },
      }),
    );
  }

  agentGone(agentId: string): void {
    this.agentSubs.get(agentId)?.unsubscribe();
    this.agentSubs.delete(agentId);
  }

  /** Whether the task is another hub's, relayed here. */
  isProxy(taskId: string): boolean {
    return this.proxies.has(taskId);
  }

  // ---- the client's hub -------------------------------------------------------------------------

  /**
   * Submits the task through the hub that holds its agent; undefined when no hub does (the caller
   * goes on as a hub alone). Rejects with the other hub's refusal as it gave it.
   */
  forward(p: Principal, req: SubmitRequest, agentId: string, target: Target): Promise<LiveTask | undefined> {
    return this.open(p, req, this.agentSubject(agentId), target);
  }

  /** Submits through whoever listens on `subject`; undefined when nobody does. */
  private async open(
    p: Principal,
    req: SubmitRequest,
    subject: string,
    target: Target,
  ): Promise<LiveTask | undefined> {
    const relay = this.relaySubject();
    const proxy = new Proxy(this, relay);
    const sub = this.listen(relay, proxy);
    const body: SubmitMessage = {
      tokenId: p.tokenId,
      relay,
      hub: this.hubId,
      window: this.host.outputWindowBytes,
      request: Buffer.from(SubmitRequest.encode(req).finish()).toString("base64"),
    };
    const answer = await this.ask<{ taskId: string; hub: string }>(subject, "submit", body).catch(
      (err: unknown) => {
        sub.unsubscribe();
        throw err;
      },
    );
    if (!answer || !answer.ok) {
      sub.unsubscribe();
      if (!answer) return undefined;
      throw new SwitchboardError(answer.code, answer.message);
    }
    const now = Date.now();
    const spec = req.spec!;
    const t = new LiveTask(
      answer.taskId,
      spec.kind!.$case,
      spec,
      target,
      p.name,
      p.pools,
      now,
      req.timeoutMs ? now + req.timeoutMs : null,
      req.waitForAgent,
      this.host.outputWindowBytes,
      () => this.grant(answer.hub, t, relay),
    );
    return this.adopt(t, answer.hub, proxy, sub);
  }

  /**
   * A proxy of a task that another hub runs now (on its agent `rec.agentId`), following its events
   * from the first; undefined when no hub runs it (then the store has all there is to see).
   */
  follow(p: Principal, rec: TaskRecord): Promise<LiveTask | undefined> {
    const open = this.following.get(rec.id);
    if (open) return open;
    const opening = this.openFollow(p, rec).finally(() => this.following.delete(rec.id));
    this.following.set(rec.id, opening);
    return opening;
  }

  private async openFollow(p: Principal, rec: TaskRecord): Promise<LiveTask | undefined> {
    const held = this.host.tasks.get(rec.id);
    if (held) return held;
    if (!rec.agentId) return undefined;
    const relay = this.relaySubject();
    const proxy = new Proxy(this, relay);
    const sub = this.listen(relay, proxy);
    const body: WatchMessage = {
      tokenId: p.tokenId,
      relay,
      hub: this.hubId,
      window: this.host.outputWindowBytes,
      taskId: rec.id,
    };
    const answer = await this.ask<{ taskId: string; hub: string }>(
      this.agentSubject(rec.agentId),
      "watch",
      body,
    ).catch((err: unknown) => {
      sub.unsubscribe();
      throw err;
    });
    if (!answer || !answer.ok) {
      sub.unsubscribe();
      if (answer && answer.code !== (Code.NOT_FOUND as number))
        throw new SwitchboardError(answer.code, answer.message);
      return undefined;
    }
    const t = new LiveTask(
      rec.id,
      rec.kind,
      TaskSpec.decode(rec.spec),
      rec.target,
      rec.requester,
      [],
      rec.createdAt,
      rec.deadlineAt,
      false,
      this.host.outputWindowBytes,
      () => this.grant(answer.hub, t, relay),
    );
    return this.adopt(t, answer.hub, proxy, sub);
  }

  /** The proxy of a task hub `hub` runs joins this hub's task table, its relayed events applied. */
  private adopt(t: LiveTask, hub: string, proxy: Proxy, sub: Subscription): LiveTask {
    t.remoteHub = hub;
    this.proxies.set(t.id, proxy);
    this.host.tasks.add(t);
    proxy.attach(t, sub);
    return t;
  }

  /** Sends a signed request; undefined when nobody listens on the subject. */
  private async ask<T extends object>(
    subject: string,
    kind: string,
    body: object,
  ): Promise<Answer<T> | undefined> {
    const m = this.signer.signOne(subject, kind, json(body));
    let reply: Msg;
    try {
      reply = await this.nc.request(subject, m.data, { timeout: REQUEST_TIMEOUT_MS, headers: m.headers });
    } catch (err) {
      if (isNoResponders(err)) return undefined;
      throw new SwitchboardError(
        Code.UNAVAILABLE,
        `another hub of the cluster did not answer: ${errorMessage(err)}`,
        {
          cause: err,
        },
      );
    }
    return this.answerOf<T>(reply);
  }

  private relaySubject(): string {
    return `${this.prefix}.relay.${subjectToken(this.hubId)}.${randomUUID()}`;
  }

  private listen(relay: string, proxy: Proxy): Subscription {
    return this.nc.subscribe(relay, {
      callback: (err, msg) => {
        if (!err) proxy.onMessage(relay, msg);
      },
    });
  }

  /**
   * Submits a task of a pool or labels through the hub whose agents have the most free credits
   * for it, when that is more than this hub has (`here`: its own, undefined for none); undefined
   * when this hub should take it itself. `others`: how many other hubs are live (their answers end
   * the wait early).
   */
  async forwardToBest(
    p: Principal,
    req: SubmitRequest,
    task: SchedTask,
    here: number | undefined,
    others: number,
  ): Promise<LiveTask | undefined> {
    if (others === 0) return undefined;
    // Offers heard a moment ago serve the next tasks, each taking a credit of the one it goes to,
    // so that a burst asks once, not once a task.
    const key = JSON.stringify([task.kind, task.target, task.allowedPools]);
    let offers = this.recentOffers.get(key);
    const fresh =
      offers && offers.at > performance.now() - OFFER_TTL_MS && offers.list.some((o) => o.free > 0);
    if (!offers || !fresh) {
      offers = { at: performance.now(), list: await this.gatherOffers(task, others) };
      this.recentOffers.set(key, offers);
    }
    let best: { hub: string; free: number } | undefined;
    for (const o of offers.list) if (o.free >= 0 && (!best || o.free > best.free)) best = o;
    // Here if this hub has room, or as much as the best; elsewhere if only there an agent may run it.
    if (!best || (here !== undefined && here >= best.free)) return undefined;
    best.free--;
    return this.open(p, req, this.ctlSubject(best.hub), task.target);
  }

  private async gatherOffers(task: SchedTask, expected: number): Promise<{ hub: string; free: number }[]> {
    const subject = `${this.prefix}.offers`;
    const inbox = `${this.prefix}.inbox.${subjectToken(this.hubId)}.${randomUUID()}`;
    const got: { hub: string; free: number }[] = [];
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        sub.unsubscribe();
        resolve();
      }, OFFER_WAIT_MS);
      const sub = this.nc.subscribe(inbox, {
        callback: (err, msg) => {
          if (err) return;
          const a =
            this.signer.verify(inbox, msg)?.kind === "answer"
              ? parse<{ hub: string; free: number }>(msg.data)
              : undefined;
          if (a && typeof a.hub === "string" && typeof a.free === "number") got.push(a);
          else this.refused(inbox, "an offer does not verify");
          if (got.length >= expected) {
            clearTimeout(timer);
            sub.unsubscribe();
            resolve();
          }
        },
      });
      const m = this.signer.signOne(subject, "offer", json({ task } satisfies OfferQuestion));
      this.nc.publish(subject, m.data, { headers: m.headers, reply: inbox });
    });
    return got;
  }

  private onOffer(subject: string, msg: Msg): void {
    const v = this.verify(subject, msg);
    if (v?.kind !== "offer") return;
    const q = parse<OfferQuestion>(msg.data);
    const t = q?.task;
    if (!t || typeof t.kind !== "string" || typeof t.target !== "object" || !Array.isArray(t.allowedPools)) {
      return this.refused(subject, "malformed offer question");
    }
    // The asking hub hears its own question too: it answers only the others.
    if (msg.reply?.startsWith(`${this.prefix}.inbox.${subjectToken(this.hubId)}.`)) return;
    // Every hub answers (-1: no agent here may run it), so that the asking hub waits for no timer.
    this.answer(msg, { ok: true, hub: this.hubId, free: this.host.capacity({ ...t, id: "" }) ?? -1 });
  }

  /** Cancels a task another hub runs, as the caller. */
  async cancelRemote(p: Principal, t: LiveTask, reason: string): Promise<TaskStateName> {
    const body: CancelMessage = { taskId: t.id, tokenId: p.tokenId, reason };
    const answer = await this.ask<{ state: TaskStateName }>(this.ctlSubject(t.remoteHub!), "cancel", body);
    if (!answer)
      throw new SwitchboardError(
        Code.UNAVAILABLE,
        `hub ${t.remoteHub} that runs task ${t.id} is not reachable`,
      );
    if (!answer.ok) throw new SwitchboardError(answer.code, answer.message);
    return answer.state;
  }

  private grant(hub: string, t: LiveTask, relay: string): void {
    this.publish(
      this.ctlSubject(hub),
      "grant",
      json({ taskId: t.id, relay, grantedTotal: t.outputGranted } satisfies GrantMessage),
    );
  }

  /** The proxy ended (its Finished came): nothing more comes on its subject. */
  proxyEnded(t: LiveTask, sub: Subscription): void {
    sub.unsubscribe();
    this.proxies.delete(t.id);
    this.host.tasks.finished(t, Date.now());
  }

  /** A relayed message that does not verify: logged, and dropped. */
  refused(subject: string, why: string): void {
    this.logger.warn({ subject, why }, "a cluster message was refused");
  }

  verify(subject: string, msg: Msg): { kind: string; frag: string | undefined } | undefined {
    const v = this.signer.verify(subject, msg);
    if (!v) this.refused(subject, "its signature does not hold");
    return v;
  }

  // ---- the agent's hub --------------------------------------------------------------------------

  private async onAgentRequest(subject: string, msg: Msg): Promise<void> {
    const v = this.verify(subject, msg);
    if (v?.kind === "submit") await this.onSubmit(subject, msg);
    else if (v?.kind === "watch") await this.onWatch(subject, msg);
  }

  private async onWatch(subject: string, msg: Msg): Promise<void> {
    const m = parse<WatchMessage>(msg.data);
    if (!m || typeof m.tokenId !== "string" || typeof m.relay !== "string" || typeof m.taskId !== "string") {
      this.refused(subject, "malformed watch");
      return;
    }
    try {
      const p = await this.host.auth.principalById(m.tokenId, "viewer");
      await this.host.assertTaskVisible(p, m.taskId);
      const t = this.host.tasks.get(m.taskId);
      if (!t || t.terminal || t.remoteHub !== undefined) {
        this.answer(msg, { ok: false, code: Code.NOT_FOUND, message: `task ${m.taskId} does not run here` });
        return;
      }
      this.serve(msg, m, t);
    } catch (err) {
      this.answer(msg, failure(err));
    }
  }

  /** Answers with the task, then relays its events from the first to the asking hub's subject. */
  private serve(msg: Msg, m: { relay: string; hub: string; window: number }, t: LiveTask): void {
    const w = new RelayWatcher(this, m.relay, m.hub, Number(m.window) || 0, t);
    this.serving.set(m.relay, w);
    this.answer(msg, { ok: true, taskId: t.id, hub: this.hubId });
    t.attach(w, 0);
    if (t.terminal) this.serving.delete(m.relay);
  }

  private async onSubmit(subject: string, msg: Msg): Promise<void> {
    const m = parse<SubmitMessage>(msg.data);
    if (!m || typeof m.tokenId !== "string" || typeof m.relay !== "string" || typeof m.request !== "string") {
      this.refused(subject, "malformed submission");
      return;
    }
    try {
      const p = await this.host.auth.principalById(m.tokenId, "operator");
      const req = SubmitRequest.decode(Buffer.from(m.request, "base64"));
      const t = await this.host.submit(p, req);
      this.serve(msg, m, t);
      this.logger.debug({ task_id: t.id, for_hub: m.hub }, "task submitted through another hub");
    } catch (err) {
      this.answer(msg, failure(err));
    }
  }

  private async onControl(subject: string, msg: Msg): Promise<void> {
    const v = this.verify(subject, msg);
    if (!v) return;
    if (v.kind === "submit") {
      await this.onSubmit(subject, msg);
    } else if (v.kind === "grant") {
      const g = parse<GrantMessage>(msg.data);
      if (g) this.serving.get(g.relay)?.granted(g.grantedTotal);
    } else if (v.kind === "cancel") {
      const c = parse<CancelMessage>(msg.data);
      if (!c) return this.refused(subject, "malformed cancel");
      try {
        const p = await this.host.auth.principalById(c.tokenId, "operator");
        this.answer(msg, { ok: true, state: await this.host.cancel(p, c.taskId, c.reason) });
      } catch (err) {
        this.answer(msg, failure(err));
      }
    }
  }

  /** Publishes an event of a task served here to the relaying hub: fragments if large. */
  relayEvent(relay: string, ev: TaskEvent): void {
    const data = TaskEvent.encode(ev).finish();
    for (const m of this.signer.sign(relay, "event", data))
      this.nc.publish(relay, m.data, { headers: m.headers });
  }

  /** The served task ended, or its relaying hub is gone: the relay stops. */
  stopServing(relay: string): void {
    this.serving.delete(relay);
  }

  /** Relays whose hub is gone (its lease lapsed) stop holding back their tasks. */
  dropRelaysOf(liveHubs: ReadonlySet<string>): void {
    for (const w of [...this.serving.values()]) {
      if (!liveHubs.has(w.hub)) {
        this.logger.info(
          { task_id: w.taskId, hub: w.hub },
          "the hub a task was relayed to is gone: relay stopped",
        );
        w.detach();
      }
    }
  }

  /**
   * Proxies of tasks on hubs that are gone (their lease lapsed) end here, their clients told to
   * look for the outcome in the store: the task may yet end elsewhere.
   */
  dropProxiesOf(liveHubs: ReadonlySet<string>): void {
    for (const p of [...this.proxies.values()]) p.hubGone(liveHubs);
  }

  /** The task's writes are committed: the relaying hub reads what this one wrote. */
  settled(taskId: string): Promise<void> {
    return this.host.store.taskSettled(taskId);
  }

  /** Stops every subscription (the hub leaves the cluster). */
  stop(): void {
    this.ctl?.unsubscribe();
    for (const s of this.agentSubs.values()) s.unsubscribe();
    this.agentSubs.clear();
    for (const w of [...this.serving.values()]) w.detach();
  }

  private answer(msg: Msg, body: Answer<Record<string, unknown>>): void {
    if (!msg.reply) return;
    const m = this.signer.signOne(msg.reply, "answer", json(body));
    msg.respond(m.data, { headers: m.headers });
  }

  private answerOf<T extends object>(reply: Msg): Answer<T> {
    const v = this.signer.verify(reply.subject, reply);
    const body = v?.kind === "answer" ? parse<Answer<T>>(reply.data) : undefined;
    if (!body) {
      return {
        ok: false,
        code: Code.INTERNAL,
        message: "another hub of the cluster answered with a message that does not verify",
      };
    }
    return body;
  }

  private publish(subject: string, kind: string, data: Uint8Array): void {
    const m = this.signer.signOne(subject, kind, data);
    try {
      this.nc.publish(subject, m.data, { headers: m.headers });
    } catch (err) {
      this.logger.warn({ err: errorMessage(err), subject }, "a cluster message was not published");
    }
  }

  private agentSubject(agentId: string): string {
    return `${this.prefix}.agent.${subjectToken(agentId)}.submit`;
  }

  private ctlSubject(hubId: string): string {
    return `${this.prefix}.hub.${subjectToken(hubId)}.ctl`;
  }
}

function failure(err: unknown): { ok: false; code: number; message: string } {
  const code = err instanceof SwitchboardError ? err.code : Code.INTERNAL;
  return { ok: false, code, message: errorMessage(err) };
}

function isNoResponders(err: unknown): boolean {
  const e = err as { code?: unknown; message?: unknown; name?: unknown };
  return (
    e?.code === "503" ||
    (typeof e?.name === "string" && /NoResponders/i.test(e.name)) ||
    (typeof e?.message === "string" && /no responders/i.test(e.message))
  );
}

/**
 * On the agent's hub: a watcher of the task that relays its events to the client's hub, and takes
 * output as consumed only as far as that hub's grants say its clients consumed it.
 */
class RelayWatcher implements Watcher {
  consumedBytes = 0;
  private readonly pending: { bytes: number; consumed: () => void }[] = [];
  private sentBytes = 0;
  private takenBytes = 0;
  private ended = false;

  constructor(
    private readonly relay: TaskRelay,
    private readonly subject: string,
    readonly hub: string,
    private readonly window: number,
    private readonly t: LiveTask,
  ) {}

  get taskId(): string {
    return this.t.id;
  }

  deliver(ev: TaskEvent, consumed: () => void): void {
    if (this.ended) return;
    if (ev.event?.$case === "finished") {
      this.ended = true;
      const relay = (): void => {
        this.relay.relayEvent(this.subject, ev);
        this.relay.stopServing(this.subject);
      };
      // A task with output: its writes first, for the client's hub reads the output from the store
      // (the result and the rest ride the event, as a hub alone answers before its commit).
      if (this.t.stdoutBytes + this.t.stderrBytes > 0) void this.relay.settled(this.t.id).finally(relay);
      else relay();
      return;
    }
    this.relay.relayEvent(this.subject, ev);
    if (ev.event?.$case === "output") {
      const bytes = ev.event.value.data.length;
      this.sentBytes += bytes;
      if (this.window === 0) consumed();
      else this.pending.push({ bytes, consumed });
    }
  }

  /** The client's hub granted this much in all: what lies more than a window behind it was consumed there. */
  granted(grantedTotal: number): void {
    const consumedThere = grantedTotal - this.window;
    while (this.pending.length > 0 && this.takenBytes + this.pending[0]!.bytes <= consumedThere) {
      const p = this.pending.shift()!;
      this.takenBytes += p.bytes;
      p.consumed();
    }
  }

  /** The relay stops: the task goes on for its other watchers, not held back by this one. */
  detach(): void {
    this.ended = true;
    this.relay.stopServing(this.subject);
    this.t.detach(this);
  }
}

/** On the client's hub: the events relayed for one task, applied to its proxy in order. */
class Proxy {
  private t: LiveTask | undefined;
  private sub: Subscription | undefined;
  private early: TaskEvent[] = [];
  private readonly parts = new Reassembly();

  constructor(
    private readonly relay: TaskRelay,
    private readonly subject: string,
  ) {}

  onMessage(subject: string, msg: Msg): void {
    const v = this.relay.verify(subject, msg);
    if (!v || v.kind !== "event") return;
    const whole = this.parts.add(msg.data, v.frag);
    if (whole === "broken") return this.relay.refused(subject, "a fragment is missing");
    if (!whole) return;
    let ev: TaskEvent;
    try {
      ev = TaskEvent.decode(whole);
    } catch {
      return this.relay.refused(subject, "an event does not decode");
    }
    if (this.t) this.apply(this.t, ev);
    else this.early.push(ev);
  }

  attach(t: LiveTask, sub: Subscription): void {
    this.t = t;
    this.sub = sub;
    for (const ev of this.early.splice(0)) this.apply(t, ev);
  }

  /** Its hub is gone: the proxy ends as lost, and says where to look for the outcome. */
  hubGone(liveHubs: ReadonlySet<string>): void {
    const t = this.t;
    if (!t || t.terminal || liveHubs.has(t.remoteHub!)) return;
    const reason = `hub ${t.remoteHub} that ran it is gone; its outcome will be in switchboard task ${t.id}`;
    this.apply(t, {
      taskId: t.id,
      seq: t.lastSeq + 1,
      gapBytes: 0,
      event: {
        $case: "finished",
        value: {
          state: stateToWire("lost"),
          exitCode: -1,
          signal: "",
          error: { code: Code.UNAVAILABLE, message: reason },
          durationMs: 0,
          result: Buffer.alloc(0),
          reason,
        },
      },
    });
  }

  private apply(t: LiveTask, ev: TaskEvent): void {
    if (t.terminal) return;
    if (ev.seq <= t.lastSeq) return this.relay.refused(this.subject, `event ${ev.seq} after ${t.lastSeq}`);
    const at = { seq: ev.seq, gapBytes: ev.gapBytes };
    const e = ev.event;
    switch (e?.$case) {
      case "queued":
        t.emit(e, 0, at);
        return;
      case "assigned":
        t.transition("assigned");
        t.agentId = e.value.agentId;
        t.assignedAt = e.value.assignedAtMs;
        t.emit(e, 0, at);
        return;
      case "started":
        t.transition("running");
        t.startedAt = e.value.startedAtMs;
        t.emit(e, 0, at);
        return;
      case "output": {
        const n = e.value.data.length;
        if (e.value.stream === OutputStream.OUTPUT_STREAM_STDERR) t.stderrBytes += n;
        else t.stdoutBytes += n;
        t.emit(e, n, at);
        return;
      }
      case "finished": {
        const f = e.value;
        const state = stateFromWire(f.state) ?? "failed";
        t.transition(state);
        t.emit(e, 0, at);
        const now = Date.now();
        t.complete(
          {
            state,
            exitCode: f.exitCode,
            signal: f.signal || null,
            errorCode: f.error ? f.error.code : null,
            errorMessage: f.error ? f.error.message : null,
            reason: f.reason || null,
            durationMs: f.durationMs,
            result: f.result,
          },
          now,
        );
        this.relay.proxyEnded(t, this.sub!);
        return;
      }
      default:
        return;
    }
  }
}
