// The hubs' NATS messages, signed: HMAC-SHA256 with the cluster's key (in the shared store) over
// the subject, the message's kind and its bytes, in a header. A hub acts only on a message whose
// signature holds, so that whoever may publish on NATS but cannot read the store cannot submit,
// cancel or steer a task. Large payloads (an output chunk may be 1 MiB, a NATS message at most
// what the server allows) travel as numbered fragments of one message, in order on one subject.
import { createHmac, timingSafeEqual } from "node:crypto";
import { headers as natsHeaders, type Msg, type MsgHdrs } from "@nats-io/transport-node";

const SIG = "Sb-Sig";
const KIND = "Sb-Kind";
const FRAG = "Sb-Frag";

/** Payload bytes per NATS message at most: well under the server's default limit (1 MiB). */
export const FRAGMENT_BYTES = 256 * 1024;

export interface Signed {
  data: Uint8Array;
  headers: MsgHdrs;
}

export class MessageSigner {
  constructor(private readonly key: Buffer) {}

  /** `data` as one message, or (over FRAGMENT_BYTES) as its fragments, each signed. */
  sign(subject: string, kind: string, data: Uint8Array): Signed[] {
    if (data.length <= FRAGMENT_BYTES) return [this.one(subject, kind, data, undefined)];
    const n = Math.ceil(data.length / FRAGMENT_BYTES);
    const out: Signed[] = [];
    for (let i = 0; i < n; i++) {
      const part = data.subarray(i * FRAGMENT_BYTES, Math.min(data.length, (i + 1) * FRAGMENT_BYTES));
      out.push(this.one(subject, kind, part, `${i + 1}/${n}`));
    }
    return out;
  }

  /** One message that is never fragmented (a request or a reply). */
  signOne(subject: string, kind: string, data: Uint8Array): Signed {
    return this.one(subject, kind, data, undefined);
  }

  /** The kind of a message whose signature holds; undefined for one that does not. */
  verify(
    subject: string,
    msg: Pick<Msg, "data" | "headers">,
  ): { kind: string; frag: string | undefined } | undefined {
    const h = msg.headers;
    const sig = h?.get(SIG);
    const kind = h?.get(KIND);
    if (!h || !sig || !kind) return undefined;
    const frag = h.get(FRAG) || undefined;
    const want = this.mac(subject, kind, frag, msg.data);
    const got = Buffer.from(sig, "hex");
    if (got.length !== want.length || !timingSafeEqual(got, want)) return undefined;
    return { kind, frag };
  }

  private one(subject: string, kind: string, data: Uint8Array, frag: string | undefined): Signed {
    const headers = natsHeaders();
    headers.set(KIND, kind);
    if (frag) headers.set(FRAG, frag);
    headers.set(SIG, this.mac(subject, kind, frag, data).toString("hex"));
    return { data, headers };
  }

  private mac(subject: string, kind: string, frag: string | undefined, data: Uint8Array): Buffer {
    return createHmac("sha256", this.key)
      .update(`${subject}\n${kind}\n${frag ?? ""}\n`)
      .update(data)
      .digest();
  }
}

/** Puts a fragmented message together again: the fragments of one subject arrive in order. */
export class Reassembly {
  private parts: Uint8Array[] = [];

  /** The whole message once its last fragment is in; undefined meanwhile (or for a broken sequence). */
  add(data: Uint8Array, frag: string | undefined): Uint8Array | undefined | "broken" {
    if (!frag) {
      if (this.parts.length > 0) return this.reset();
      return data;
    }
    const [i, n] = frag.split("/").map(Number) as [number, number];
    if (!(i >= 1 && n >= i) || i !== this.parts.length + 1) return this.reset();
    this.parts.push(data.slice());
    if (i < n) return undefined;
    const whole = Buffer.concat(this.parts);
    this.parts = [];
    return whole;
  }

  private reset(): "broken" {
    this.parts = [];
    return "broken";
  }
}

/** A NATS subject token for any string (agent and hub ids may hold dots). */
export function subjectToken(s: string): string {
  return Buffer.from(s, "utf8").toString("base64url") || "_";
}
