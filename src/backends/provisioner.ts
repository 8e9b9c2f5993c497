// Typed client for provisioner.v1.ProvisionerService (wire-protocol.md §5.10).
import { Metadata, type ClientReadableStream } from '@grpc/grpc-js';
import {
  ProvisionerServiceClient,
  type ProvisionWorkspaceResponse,
} from '../gen/provisioner/v1/provisioner.js';
import type { WorkspaceDetails } from '../gen/common/v1/common.js';
import { ProxyError } from '../common/errors.js';
import {
  channelCredentials,
  channelOptions,
  describeGrpcError,
  interceptorsFor,
  unaryCall,
  type BackendConfig,
} from './grpc.js';

export type { WorkspaceDetails, ProvisionWorkspaceResponse };

export interface StreamOptions {
  /** Seconds; enforced by the provisioner, and by this client with a margin (a hung provisioner). */
  timeout: number;
  signal?: AbortSignal;
}

export interface ProvisionerBackend {
  workspacesByUserStr(canonical: string): Promise<WorkspaceDetails[]>;
  findWorkspace(name: string): Promise<WorkspaceDetails>;
  provision(canonical: string, opts: StreamOptions): AsyncIterable<ProvisionWorkspaceResponse>;
  start(workspace: string, opts: StreamOptions): AsyncIterable<ProvisionWorkspaceResponse>;
  /** Resolves once the channel is connected (readiness probes); rejects after `timeoutMs`. */
  ready(timeoutMs: number): Promise<void>;
  close(): void;
}

const UNARY_TIMEOUT_MS = 30_000;
/** Beyond the provisioner's own timeout, how long this client waits before giving up on a stream. */
const STREAM_DEADLINE_MARGIN_MS = 30_000;

export function createProvisionerClient(cfg: BackendConfig): ProvisionerBackend {
  const client = new ProvisionerServiceClient(cfg.address, channelCredentials(cfg), {
    ...channelOptions(cfg),
    interceptors: interceptorsFor(cfg),
  });
  const fail = (rpc: string) => (e: unknown) => {
    throw new ProxyError('unavailable', `provisioner ${rpc}: ${describeGrpcError(e)}`, { cause: e });
  };

  function stream(open: () => ClientReadableStream<ProvisionWorkspaceResponse>, signal?: AbortSignal) {
    return {
      async *[Symbol.asyncIterator]() {
        const call = open();
        const onAbort = () => call.cancel();
        signal?.addEventListener('abort', onAbort, { once: true });
        if (signal?.aborted) call.cancel();
        try {
          for await (const msg of call as AsyncIterable<ProvisionWorkspaceResponse>) yield msg;
        } finally {
          signal?.removeEventListener('abort', onAbort);
          call.cancel();
        }
      },
    };
  }

  return {
    async workspacesByUserStr(userstr) {
      const r = await unaryCall(
        client,
        client.getWorkspacesByUserStr,
        { userstr },
        { timeoutMs: UNARY_TIMEOUT_MS },
      ).catch(fail('GetWorkspacesByUserStr'));
      return r.workspaces;
    },
    findWorkspace(workspace) {
      return unaryCall(client, client.findWorkspace, { workspace }, { timeoutMs: UNARY_TIMEOUT_MS }).catch(
        fail('FindWorkspace'),
      );
    },
    provision(userstr, o) {
      return stream(
        () =>
          client.provisionWorkspaceStream(
            { userstr, timeout: o.timeout, sendProgress: true, sendEvents: true },
            new Metadata(),
            { deadline: streamDeadline(o.timeout) },
          ),
        o.signal,
      );
    },
    start(workspace, o) {
      return stream(
        () =>
          client.startWorkspaceStream(
            { workspace, timeout: o.timeout, sendProgress: true, sendEvents: true },
            new Metadata(),
            { deadline: streamDeadline(o.timeout) },
          ),
        o.signal,
      );
    },
    ready(timeoutMs) {
      return new Promise<void>((resolve, reject) =>
        client.waitForReady(Date.now() + timeoutMs, (err) => (err ? reject(err) : resolve())),
      );
    },
    close() {
      client.close();
    },
  };
}

function streamDeadline(timeoutS: number): Date {
  return new Date(Date.now() + timeoutS * 1000 + STREAM_DEADLINE_MARGIN_MS);
}
