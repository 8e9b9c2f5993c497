// Per-connection state: only what is genuinely shared by the channels of one SSH connection
// (reference-behaviour §9.4, §23.b). Everything that belongs to one session lives on its channel.
import type { Connection } from 'ssh2';
import type { Logger } from '../ops/log.js';
import { ChannelIds } from '../common/ids.js';
import type { AuthenticatedUser } from './auth.js';
import type { ProgressWriter, ProvisionEventLike } from './progress.js';
import type { LiveConnectionInfo } from './registry.js';
import type { ByteCounters } from './relay.js';
import { cancelled, raceAbort, type BoundWorkspace } from './workspace.js';

/** Operation codes reported to the session service (reference-behaviour §9.3). */
export type OpCode = 'sh' | 'pt' | 'ex' | 'sf' | 'af' | 'pf' | 'ux';

export interface ClientInfo {
  ip: string;
  port: number;
  /** The address the client connected to (the PROXY header's destination when there was one). */
  server?: { ip: string; port: number };
  /** The SSH client's software version (`OpenSSH_9.2p1 …`). */
  version: string;
}

/** A workspace binding in progress, shared by every channel of the connection that waits for it. */
interface Binding {
  promise: Promise<BoundWorkspace>;
  writers: Set<ProgressWriter>;
  abort: AbortController;
  waiters: number;
  provisioning: boolean;
}

export class GatewayConnection implements LiveConnectionInfo {
  readonly ids: ChannelIds;
  readonly counters: ByteCounters = { in: 0, out: 0 };
  readonly ops = new Set<OpCode>();
  readonly startedAt = new Date();
  /** Open channels by kind (limits and the control service). */
  readonly open = { session: 0, directTcpip: 0, streamLocal: 0, agent: 0 };
  private readonly closer = new AbortController();
  private bound: BoundWorkspace | undefined;
  private binding: Binding | undefined;
  private firstBind = true;

  constructor(
    readonly id: string,
    readonly ssh: Connection,
    readonly user: AuthenticatedUser,
    readonly client: ClientInfo,
    readonly log: Logger,
    private readonly disconnect: (message: string) => void,
    private readonly onFirstBind: () => void,
  ) {
    this.ids = new ChannelIds(id);
  }

  // LiveConnectionInfo
  get clientIp(): string {
    return this.client.ip;
  }
  get clientPort(): number {
    return this.client.port;
  }
  get clientVersion(): string {
    return this.client.version;
  }
  get username(): string {
    return this.user.userstr.username;
  }
  get userstrBlueprint(): string {
    return this.user.userstr.blueprint;
  }
  get workspace(): LiveConnectionInfo['workspace'] {
    const b = this.bound;
    return b
      ? { name: b.details.name, blueprint: b.details.blueprint, appVersion: b.details.appVersion }
      : undefined;
  }
  get bytes(): ByteCounters {
    return this.counters;
  }
  operations(): string[] {
    return [...this.ops].sort();
  }
  openChannels(): number {
    const o = this.open;
    return o.session + o.directTcpip + o.streamLocal + o.agent;
  }
  end(message: string): void {
    this.disconnect(message);
  }

  /** Aborted when the SSH connection closes. */
  get closed(): AbortSignal {
    return this.closer.signal;
  }

  /** The workspace, if one is bound and believed healthy. */
  get current(): BoundWorkspace | undefined {
    return this.bound;
  }

  /**
   * The workspace of this connection. The first channel that needs it binds it (`bind`); channels that
   * arrive meanwhile wait for the same binding, each with its own progress writer and its own
   * cancellation (Ctrl+C in one PTY shell cancels only that channel's wait; the binding is abandoned
   * only when every waiter gave up). A failure is not cached: a later channel retries.
   */
  acquireWorkspace(
    progress: ProgressWriter,
    signal: AbortSignal,
    bind: (progress: ProgressWriter, signal: AbortSignal) => Promise<BoundWorkspace>,
  ): Promise<BoundWorkspace> {
    if (this.bound) return Promise.resolve(this.bound);
    if (this.closer.signal.aborted) return Promise.reject(cancelled());
    let b = this.binding;
    if (!b) {
      const abort = new AbortController();
      const created: Binding = {
        writers: new Set(),
        abort,
        waiters: 0,
        provisioning: false,
        promise: Promise.resolve(null as never),
      };
      const sig = AbortSignal.any([abort.signal, this.closer.signal]);
      created.promise = bind(fanOut(created), sig)
        .then((ws) => {
          if (this.closer.signal.aborted) {
            ws.client.close();
            throw cancelled();
          }
          this.bound = ws;
          if (this.firstBind) {
            this.firstBind = false;
            this.onFirstBind();
          }
          return ws;
        })
        .finally(() => {
          if (this.binding === created) this.binding = undefined;
        });
      created.promise.catch(() => undefined);
      this.binding = created;
      b = created;
    }
    const shared = b;
    shared.waiters++;
    shared.writers.add(progress);
    if (shared.provisioning) progress.startProvisioning();
    return raceAbort(shared.promise, signal).finally(() => {
      shared.writers.delete(progress);
      if (--shared.waiters === 0 && signal.aborted) shared.abort.abort();
    });
  }

  /**
   * After a failure talking to the workspace (UNAVAILABLE, a broken stream, a failed handshake) the
   * binding is dropped, so the next channel re-resolves it through the provisioner and handshakes again
   * instead of dialling an address that may now belong to someone else.
   */
  workspaceFailed(ws: BoundWorkspace, why: string): void {
    if (this.bound !== ws) return;
    this.log.warn({ workspace: ws.details.name, agent: ws.client.address, why }, 'workspace binding dropped');
    this.bound = undefined;
    // Channels still running on the old client keep it until they end; it is closed with the connection.
    this.retired.push(ws);
  }

  private readonly retired: BoundWorkspace[] = [];

  close(): void {
    this.closer.abort();
    this.binding?.abort.abort();
    this.bound?.client.close();
    for (const r of this.retired) r.client.close();
    this.bound = undefined;
  }
}

function fanOut(b: Binding): ProgressWriter {
  const each = (f: (w: ProgressWriter) => void) => b.writers.forEach(f);
  return {
    startProvisioning: () => {
      b.provisioning = true;
      each((w) => w.startProvisioning());
    },
    event: (e: ProvisionEventLike) => each((w) => w.event(e)),
    endProvisioning: (failed) => {
      b.provisioning = false;
      each((w) => w.endProvisioning(failed));
    },
    userError: (m) => each((w) => w.userError(m)),
    systemError: (m) => each((w) => w.systemError(m)),
    connecting: (s) => each((w) => w.connecting(s)),
    close: () => undefined,
  };
}
