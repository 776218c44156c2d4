// Serializers for the hot gRPC methods. The generated ones encode into a growing writer that shifts a
// nested message's bytes to fit each length prefix, then copy the result out: for a 1 MiB output chunk
// inside an event inside a response, five copies and as much garbage. These encode with ExactWriter (each
// length known before its message, the data copied once) into a buffer of exactly the message's size.
// grpc-js copies that once more into its frame.
import { makeGenericClientConstructor, type ChannelCredentials, type ClientOptions } from "@grpc/grpc-js";
import {
  AgentMessage,
  AgentServiceService,
  HubMessage,
  type AgentServiceClient,
} from "../gen/switchboard/v1/agent.js";
import {
  ClientServiceService,
  SessionRequest,
  SessionResponse,
  SubmitRequest,
  type ClientServiceClient,
} from "../gen/switchboard/v1/client.js";
import { TaskEvent, TaskInput, TaskResult } from "../gen/switchboard/v1/task.js";
import { ExactWriter, type Encodes } from "./exact-writer.js";

/** Past this, a reused buffer is not kept after use, so that one huge message does not stay resident. */
const KEEP_SCRATCH_BYTES = 4 * 1024 * 1024;

/** For requests (client to server): a buffer per message, since grpc-js may hold it (retries, flow control). */
export function serializer<T>(type: Encodes<T>): (value: T) => Buffer {
  const writer = new ExactWriter();
  return (value: T): Buffer => writer.encode(type, value, (size) => Buffer.allocUnsafe(size));
}

/**
 * For responses (server to client): one buffer reused for every message. A grpc-js server copies the
 * serialized message into its frame before serialize returns (server-interceptors' serializeMessage), so
 * the buffer is free again at once; a client does not, which is why requests use `serializer`.
 */
export function responseSerializer<T>(type: Encodes<T>): (value: T) => Buffer {
  const writer = new ExactWriter();
  let scratch = Buffer.alloc(0);
  return (value: T): Buffer =>
    writer.encode(type, value, (size) => {
      if (size <= scratch.length) return scratch;
      if (size > KEEP_SCRATCH_BYTES) return Buffer.allocUnsafeSlow(size);
      // Some room above this size, so that a slightly larger message (a longer id) does not allocate again.
      scratch = Buffer.allocUnsafeSlow(Math.min(KEEP_SCRATCH_BYTES, Math.max(64 * 1024, size + (size >> 3))));
      return scratch;
    });
}

export const agentServiceDefinition = {
  connect: {
    ...AgentServiceService.connect,
    requestSerialize: serializer(AgentMessage),
    responseSerialize: responseSerializer(HubMessage),
  },
} as const;

export const clientServiceDefinition = {
  ...ClientServiceService,
  execute: {
    ...ClientServiceService.execute,
    requestSerialize: serializer(SubmitRequest),
    responseSerialize: responseSerializer(TaskResult),
  },
  run: { ...ClientServiceService.run, responseSerialize: responseSerializer(TaskEvent) },
  watch: { ...ClientServiceService.watch, responseSerialize: responseSerializer(TaskEvent) },
  session: {
    ...ClientServiceService.session,
    requestSerialize: serializer(SessionRequest),
    responseSerialize: responseSerializer(SessionResponse),
  },
  input: { ...ClientServiceService.input, requestSerialize: serializer(TaskInput) },
} as const;

type ClientConstructor<C> = new (
  address: string,
  credentials: ChannelCredentials,
  options?: Partial<ClientOptions>,
) => C;

/** The generated client constructors, built on the serializers above. */
export const FastAgentServiceClient = makeGenericClientConstructor(
  agentServiceDefinition,
  "switchboard.v1.AgentService",
) as unknown as ClientConstructor<AgentServiceClient>;

export const FastClientServiceClient = makeGenericClientConstructor(
  clientServiceDefinition,
  "switchboard.v1.ClientService",
) as unknown as ClientConstructor<ClientServiceClient>;
