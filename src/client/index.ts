// The Switchboard SDK: a typed client for the hub. Promises for single results, async iterators
// for event streams, AbortSignal to cancel. The CLI is built on exactly this surface.
export { SwitchboardClient } from "./client.js";
export type {
  ListTasksFilter,
  QueryEvent,
  RunOptions,
  SwitchboardClientOptions,
  TaskInputWriter,
  WatchOptions,
} from "./client.js";
export type { AdminApi, CreateTokenInput } from "./admin-api.js";
export type {
  ListNodesOptions,
  MigrateNodeInput,
  NodeLogsInput,
  NodesApi,
  SpawnNodeInput,
  StopNodeInput,
  StopNodeOptions,
} from "./nodes-api.js";
export { echo, http, shell, sql, toSubmitRequest, toTarget } from "./builders.js";
export type {
  HttpOptions,
  ShellLimitsOptions,
  ShellOptions,
  SqlOptions,
  TargetInput,
  TaskRequest,
} from "./builders.js";
export { docker } from "./builders.js";
export type { DockerOp, DockerOptions } from "./builders.js";
export { file } from "./builders.js";
export type { FileOptions } from "./builders.js";
export type { FileResult } from "../common/file-transfer.js";
export { parseFileResult, parseOffsetLine } from "../common/file-transfer.js";
export type { HttpResponseHead, HttpResultSummary } from "../common/http-result.js";
export { parseHttpHead } from "../common/http-result.js";
export type {
  ColumnInfo,
  JsonValue,
  SqlResultHeader,
  SqlResultSummary,
  TableMeta,
} from "../common/sql-result.js";
export { Code, codeName, SwitchboardError } from "../common/errors.js";
export { SessionMode, AgentHealth } from "../gen/switchboard/v1/client.js";
export type {
  AgentInfo,
  AuditEntry,
  ClusterStatusResponse,
  CreateTokenResponse,
  ForgetAgentResponse,
  HubInfo,
  InputResult,
  ListHubsResponse,
  NodeBatchItem,
  NodeInfo,
  NodeLogsResponse,
  PoolStatus,
  SubmitRequest,
  TokenInfo,
} from "../gen/switchboard/v1/client.js";
export type { NodeRecord } from "../gen/switchboard/v1/node.js";
export { TaskState, OutputStream } from "../gen/switchboard/v1/task.js";
export type {
  Assigned,
  DatasourceHealth,
  DockerSpec,
  EchoSpec,
  FileSpec,
  Finished,
  HttpSpec,
  Output,
  Queued,
  ShellLimits,
  ShellSpec,
  SqlSpec,
  Started,
  Target,
  TaskError,
  TaskEvent,
  TaskInfo,
  TaskResult,
  TaskSpec,
} from "../gen/switchboard/v1/task.js";
