// Serializers for the hot gRPC methods. The generated ones encode into a fresh, growing writer
// (zero-filled on each growth), slice the result, then copy it again into a Buffer: for a 1 MiB
// output chunk that is five copies and as much garbage. These reuse one writer per message type
// (encoding is synchronous, so it is never shared by two calls at once) and hand grpc-js a view
// of the encoded bytes, which grpc-js copies once more into its frame.
import { makeGenericClientConstructor, type ChannelCredentials, type ClientOptions } from "@grpc/grpc-js";
import { BinaryWriter } from "@bufbuild/protobuf/wire";
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

interface Encodes<T> {
  encode(message: T, writer?: BinaryWriter): BinaryWriter;
}

/** Past this, the reused writer is dropped after use so one huge message does not stay resident. */
const KEEP_WRITER_BYTES = 4 * 1024 * 1024;

export function serializer<T>(type: Encodes<T>): (value: T) => Buffer {
  let writer = new BinaryWriter();
  return (value: T): Buffer => {
    const bytes = type.encode(value, writer).finish();
    if (bytes.byteLength > KEEP_WRITER_BYTES) writer = new BinaryWriter();
    return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  };
}

export const agentServiceDefinition = {
  connect: {
    ...AgentServiceService.connect,
    requestSerialize: serializer(AgentMessage),
    responseSerialize: serializer(HubMessage),
  },
} as const;

export const clientServiceDefinition = {
  ...ClientServiceService,
  execute: {
    ...ClientServiceService.execute,
    requestSerialize: serializer(SubmitRequest),
    responseSerialize: serializer(TaskResult),
  },
  run: { ...ClientServiceService.run, responseSerialize: serializer(TaskEvent) },
  watch: { ...ClientServiceService.watch, responseSerialize: serializer(TaskEvent) },
  session: {
    ...ClientServiceService.session,
    requestSerialize: serializer(SessionRequest),
    responseSerialize: serializer(SessionResponse),
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
