// Per-connection state: only what is genuinely shared by the channels of one SSH connection
// (reference-behaviour §9.4, §23.b). Everything that belongs to one session lives on its channel.
import type { Connection } from 'ssh2';
import type { Logger } from '../ops/log.js';
import { ChannelIds } from '../common/ids.js';
import type { LegacyAuthorizer as Authorizer } from './authorize.js';
import type { AuthenticatedUser } from './auth.js';
import type { ProgressWriter, WriterOptions } from './progress.js';
import type { ByteCounters } from './relay.js';
import type { BoundWorkspace, WorkspaceResolver } from './workspace.js';

/** Operation codes reported to the session service (reference-behaviour §9.3). */
export type OpCode = 'sh' | 'pt' | 'ex' | 'sf' | 'af' | 'pf' | 'ux';

export interface ChannelSettings {
  sftpBinary: string;
  writerOptions: WriterOptions;
  maxDirectTcpip: number;
}

export interface ConnectionDeps {
  settings: ChannelSettings;
  authorizer: Authorizer;
  resolver: WorkspaceResolver;
}

export class GatewayConnection {
  readonly ids: ChannelIds;
  readonly counters: ByteCounters = { in: 0, out: 0 };
  readonly ops = new Set<OpCode>();
  /** Open direct-tcpip channels, bounded by maxDirectTcpip. */
  directTcpip = 0;
  private readonly closer = new AbortController();
  private bound: BoundWorkspace | undefined;
  private binding: Promise<BoundWorkspace> | undefined;

  constructor(
    readonly id: string,
    readonly ssh: Connection,
    readonly user: AuthenticatedUser,
    readonly deps: ConnectionDeps,
    readonly log: Logger,
  ) {
    this.ids = new ChannelIds(id);
  }

  /** Aborted when the SSH connection closes. */
  get closed(): AbortSignal {
    return this.closer.signal;
  }

  /**
   * The workspace of this connection, resolved by the first channel that needs it and reused after
   * that; a failure is not cached, so a later channel retries (reference-behaviour §9.5 step 4).
   */
  workspace(progress: ProgressWriter, signal: AbortSignal): Promise<BoundWorkspace> {
    if (this.bound) return Promise.resolve(this.bound);
    if (!this.binding) {
      const sig = AbortSignal.any([signal, this.closer.signal]);
      this.binding = this.deps.resolver
        .bind(this.user.user, this.user.userstr, progress, sig, this.log)
        .then((b) => {
          if (this.closer.signal.aborted) b.client.close();
          else this.bound = b;
          return b;
        })
        .finally(() => {
          this.binding = undefined;
        });
    }
    return this.binding;
  }

  close(): void {
    this.closer.abort();
    this.bound?.client.close();
    this.bound = undefined;
  }
}
