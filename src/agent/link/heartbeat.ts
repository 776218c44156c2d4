// Heartbeats to the hub: every interval of the session (the hub's Welcome value, else the config's),
// the agent's load and trouble, so the hub can mark it Degraded and schedule around it.
import type { AgentMessage, Heartbeat } from "../../gen/switchboard/v1/agent.js";

export class Heartbeater {
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly snapshot: () => Omit<Heartbeat, "sentAtMs">,
    private readonly send: (msg: AgentMessage) => void,
  ) {}

  start(intervalMs: number): void {
    this.stop();
    this.timer = setInterval(() => this.beat(), Math.max(10, intervalMs));
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  beat(): void {
    this.send({ body: { $case: "heartbeat", value: { ...this.snapshot(), sentAtMs: Date.now() } } });
  }
}
