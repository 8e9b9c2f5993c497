// Client for the workspace daemon (k8shelld protocol, wire-protocol.md §5.1–5.7, §6.2, §9).
// One gRPC channel per SSH connection (the reference's model), shared by the System and Ssh
// services and closed with the connection.
import { existsSync } from 'node:fs';
import { Channel, connectivityState, Metadata, status, type ClientDuplexStream } from '@grpc/grpc-js';
import {
  SystemServiceClient,
  type SshServiceClient,
  type ExecRequest,
  type ExecResponse,
  type PortForwardRequest,
  type PortForwardResponse,
  type ShellRequest,
  type ShellResponse,
  type UnixSocketRequest,
  type UnixSocketResponse,
} from '../gen/k8shelld/v1/k8shelld.js';
import { ProxyError } from '../common/errors.js';
import { FastSshServiceClient } from '../common/k8shelld-wire.js';
import { channelCredentials, channelOptions, describeGrpcError, interceptorsFor, unaryCall } from './grpc.js';

/** Capability strings of wire-protocol.md §9.2. */
export const Capability = {
  shellExitStatus: 'shell-exit-status',
  execExitStatus: 'exec-exit-status',
  portForwardHalfClose: 'portforward-half-close',
  portForwardConfirmConnect: 'portforward-confirm-connect',
  unixSocketHalfClose: 'unixsocket-half-close',
  unixSocketMultiplex: 'unixsocket-multiplex',
  unixSocketOwner: 'unixsocket-owner',
  /** Ours (docs/security.md): DIAL confirms the connection with STREAM_EVENT_OPENED. */
  unixSocketConfirmConnect: 'unixsocket-confirm-connect',
} as const;

/** What the gateway tells the agent it understands (informational, §9). */
export const GATEWAY_CAPABILITIES = Object.values(Capability);

export interface WorkspaceTarget {
  podIp: string;
  port: number;
  tlsEnabled: boolean;
  serverName: string;
}

export interface K8shelldConfig {
  tokenFilePath?: string;
  /** CA used when the workspace requires TLS (reference: /etc/k8shell/ca/ca.crt). */
  caCertPath: string;
  /**
   * HTTP/2 keepalive ping interval in ms (0 = off), so a partitioned workspace is noticed within
   * about interval + timeout instead of never. The daemon must permit pings this often.
   */
  keepaliveMs?: number;
  keepaliveTimeoutMs?: number;
}

export interface HandshakeResult {
  serverVersion: string;
  accepted: boolean;
  message: string;
  capabilities: ReadonlySet<string>;
  /** Ours (HandshakeResponse.workspace_name = 101): the workspace the agent says it serves; "" = unknown. */
  workspaceName: string;
}

export type ShellCall = ClientDuplexStream<ShellRequest, ShellResponse>;
export type ExecCall = ClientDuplexStream<ExecRequest, ExecResponse>;
export type PortForwardCall = ClientDuplexStream<PortForwardRequest, PortForwardResponse>;
export type UnixSocketCall = ClientDuplexStream<UnixSocketRequest, UnixSocketResponse>;

export class WorkspaceClient {
  readonly address: string;
  private readonly channel: Channel;
  private readonly system: SystemServiceClient;
  private readonly ssh: SshServiceClient;
  private closed = false;
  private wasReady = false;
  private lost = false;

  constructor(target: WorkspaceTarget, cfg: K8shelldConfig) {
    const host = target.podIp.includes(':') ? `[${target.podIp}]` : target.podIp;
    this.address = `${host}:${target.port}`;
    if (target.tlsEnabled && !existsSync(cfg.caCertPath)) {
      throw new ProxyError(
        'bad_config',
        `the workspace requires TLS but ssh proxy does not have the TLS CA cert at ${cfg.caCertPath}`,
      );
    }
    const creds = channelCredentials(target.tlsEnabled ? { caCertPath: cfg.caCertPath } : {});
    const keepalive = cfg.keepaliveMs
      ? {
          'grpc.keepalive_time_ms': cfg.keepaliveMs,
          'grpc.keepalive_timeout_ms': cfg.keepaliveTimeoutMs ?? 10_000,
          'grpc.keepalive_permit_without_calls': 1,
        }
      : {};
    const options = channelOptions(target.tlsEnabled ? { serverName: target.serverName } : {}, {
      // Bulk relays: a larger HTTP/2 window lifts single-stream throughput (node-notes §7.3), but
      // no larger than the agent's (AGENT_WINDOW_BYTES says why: a write-write deadlock in Node's http2).
      'grpc-node.flow_control_window': 1024 * 1024,
      ...keepalive,
    });
    this.channel = new Channel(this.address, creds, options);
    const clientOpts = { channelOverride: this.channel, interceptors: interceptorsFor(cfg) };
    this.system = new SystemServiceClient(this.address, creds, clientOpts);
    this.ssh = new FastSshServiceClient(this.address, creds, clientOpts);
    this.watch(this.channel.getConnectivityState(true));
  }

  /**
   * True once the connection that was established is gone (agent died, network partition, GOAWAY).
   * Such a client is never used for new channels: grpc-js would quietly redial the same address, which
   * may by then belong to another workspace.
   */
  get broken(): boolean {
    return this.lost;
  }

  private watch(current: connectivityState): void {
    if (this.closed) return;
    if (current === connectivityState.READY) this.wasReady = true;
    else if (this.wasReady) {
      this.lost = true;
      return;
    }
    // Re-armed until closed or lost; no deadline, so no timer holds the process open.
    try {
      this.channel.watchConnectivityState(current, Infinity, () => {
        if (!this.closed) this.watch(this.channel.getConnectivityState(false));
      });
    } catch {
      // The channel was shut down meanwhile.
    }
  }

  async handshake(
    timeoutMs: number,
    capabilities: readonly string[] = GATEWAY_CAPABILITIES,
  ): Promise<HandshakeResult> {
    const r = await unaryCall(
      this.system,
      this.system.handshake,
      { clientVersion: '', capabilities: [...capabilities] },
      { timeoutMs },
    );
    return {
      serverVersion: r.serverVersion,
      accepted: r.accepted,
      message: r.message,
      capabilities: new Set(r.capabilities),
      workspaceName: r.workspaceName,
    };
  }

  shell(sessionId: string): ShellCall {
    return this.ssh.shell(idMetadata('session-id', sessionId));
  }

  async resize(sessionId: string, width: number, height: number): Promise<void> {
    await unaryCall(
      this.ssh,
      this.ssh.resizeTerminal,
      { width, height },
      {
        metadata: idMetadata('session-id', sessionId),
        timeoutMs: 5000,
      },
    );
  }

  exec(execId: string): ExecCall {
    return this.ssh.exec(idMetadata('exec-id', execId));
  }

  portForward(id: string): PortForwardCall {
    return this.ssh.portForward(idMetadata('portforward-id', id));
  }

  unixSocket(id: string): UnixSocketCall {
    return this.ssh.unixSocket(idMetadata('unixsocket-id', id));
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.system.close();
    this.ssh.close();
    this.channel.close();
  }
}

function idMetadata(key: string, value: string): Metadata {
  const md = new Metadata();
  md.set(key, value);
  return md;
}

/** The reference's user-facing text for a failed daemon handshake (reference-behaviour §10.1 step 7). */
export function handshakeFailureText(e: unknown): string {
  const code = (e as { code?: number }).code;
  if (code === status.UNAVAILABLE || code === status.DEADLINE_EXCEEDED)
    return 'The workspace is unreachable. Please retry in a moment.';
  return describeGrpcError(e);
}
