// Child process for the NATS peer: N connections to nats-server, each subscribed to the subject
// in one queue group, answering every request with its own payload. Prints "READY" once all
// subscriptions are registered with the server. SIGTERM drains and exits.
//
//   node dist/bench/nats-responders.js --url nats://127.0.0.1:PORT --subject S --queue Q --connections 2
import { parseArgs } from "node:util";
import { connect, type NatsConnection } from "@nats-io/transport-node";

const { values } = parseArgs({
  options: {
    url: { type: "string" },
    subject: { type: "string", default: "bench.echo" },
    queue: { type: "string", default: "responders" },
    connections: { type: "string", default: "2" },
  },
});
if (values.url === undefined) throw new Error("--url is required");
const url = values.url;

const conns: NatsConnection[] = [];
for (let i = 0; i < Number(values.connections); i++) {
  const nc = await connect({ servers: url, name: `bench-responder-${i}`, noEcho: true });
  nc.subscribe(values.subject, {
    queue: values.queue,
    callback: (err, msg) => {
      if (err === null) msg.respond(msg.data);
    },
  });
  await nc.flush();
  conns.push(nc);
}
process.stdout.write("READY\n");

let stopping = false;
const stop = async (): Promise<void> => {
  if (stopping) return;
  stopping = true;
  await Promise.allSettled(conns.map((nc) => nc.close()));
  process.exit(0);
};
process.on("SIGTERM", () => void stop());
process.on("SIGINT", () => void stop());
