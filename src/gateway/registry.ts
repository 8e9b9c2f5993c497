// The live connections of this process, and the lifecycle hooks other parts plug into: session
// tracking (UpsertSession/EndSession), metrics, the control service's list/end, the locked-users
// watcher and the drain. The gateway calls the hooks; observers never reach back into the gateway.

/** What an observer may read about one connection. */
export interface LiveConnectionInfo {
  readonly id: string;
  /** The address of the client (the PROXY header's source when one was accepted). */
  readonly clientIp: string;
  readonly clientPort: number;
  /** The SSH client's identification string (e.g. `SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u6`). */
  readonly clientVersion: string;
  readonly startedAt: Date;
  /** Set once authenticated. */
  readonly username: string | undefined;
  /** The user-string blueprint (reference-behaviour §16: not the workspace's). */
  readonly userstrBlueprint: string;
  /** Set once the workspace handshake succeeded. */
  readonly workspace: { name: string; blueprint: string; appVersion: string } | undefined;
  /** client → workspace, workspace → client (cumulative). */
  readonly bytes: { readonly in: number; readonly out: number };
  /** Sorted unique operation codes so far (reference-behaviour §9.3). */
  operations(): string[];
  /** Channels open now. */
  openChannels(): number;
  /** Ends the connection with an SSH disconnect carrying `message` (lock, control service, drain). */
  end(message: string): void;
}

/** A connection still authenticating: not live yet, but a user lock closes it too (reference §17.3). */
export interface AuthenticatingConnection {
  readonly id: string;
  /** The user-string username of the attempts so far; undefined until one parsed. */
  readonly username: string | undefined;
  end(message: string): void;
}

export interface ConnectionObserver {
  authenticated?(c: LiveConnectionInfo): void;
  workspaceBound?(c: LiveConnectionInfo): void;
  /** Called once; may return a promise (EndSession) that the gateway waits for, bounded, on stop. */
  closed?(c: LiveConnectionInfo): void | Promise<void>;
}

export class ConnectionRegistry {
  private readonly live = new Map<string, LiveConnectionInfo>();
  private readonly pending = new Map<string, AuthenticatingConnection>();
  private readonly observers: ConnectionObserver[] = [];

  observe(o: ConnectionObserver): void {
    this.observers.push(o);
  }

  get size(): number {
    return this.live.size;
  }

  list(): LiveConnectionInfo[] {
    return [...this.live.values()];
  }

  get(id: string): LiveConnectionInfo | undefined {
    return this.live.get(id);
  }

  /** Connections of one user: authenticated, or still authenticating as that user. */
  byUser(username: string): Array<Pick<LiveConnectionInfo, 'id' | 'end'>> {
    const authenticating = [...this.pending.values()].filter((c) => c.username === username);
    return [...this.list().filter((c) => c.username === username), ...authenticating];
  }

  /** Registers a connection that is authenticating; call the result when it authenticated or closed. */
  authenticating(c: AuthenticatingConnection): () => void {
    this.pending.set(c.id, c);
    return () => this.pending.delete(c.id);
  }

  add(c: LiveConnectionInfo): void {
    this.live.set(c.id, c);
  }

  authenticated(c: LiveConnectionInfo): void {
    for (const o of this.observers) safe(() => o.authenticated?.(c));
  }

  workspaceBound(c: LiveConnectionInfo): void {
    for (const o of this.observers) safe(() => o.workspaceBound?.(c));
  }

  /** Removes the connection and tells every observer; resolves when their work is done. */
  async closed(c: LiveConnectionInfo): Promise<void> {
    if (!this.live.delete(c.id)) return;
    await Promise.allSettled(this.observers.map((o) => Promise.resolve().then(() => o.closed?.(c))));
  }
}

/** An observer's bug must not break the connection or the other observers. */
function safe(f: () => void): void {
  try {
    f();
  } catch {
    // Observers log their own failures.
  }
}
