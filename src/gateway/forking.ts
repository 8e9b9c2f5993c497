// Forking mode, parent side (reference-behaviour §4.2, our §23.i, node-notes §9).
//
// The parent accepts with pauseOnConnect (it never reads a byte: the PROXY header and SSH belong to
// the child) and spawns `node <entry> --config <path> --child [--logtext]` with the socket as fd 3,
// detached into its own process group, stdout/stderr inherited. It keeps a table of its children,
// caps them (beyond the cap the client gets an SSH disconnect "too many connections"), reaps them and
// logs non-zero exits as the reference does.
//
// Signals: SIGTERM/SIGINT stop accepting, forward SIGTERM to every child and wait for them up to the
// drain timeout (plus a short grace for the children's own forced exit), then kill what is left. A
// second SIGTERM/SIGINT exits at once. SIGUSR2 closes the listener and exits without signalling the
// children, so a new parent can bind the port while the old children keep serving (upgrade).
//
// Pre-authentication limits (our §23.l) are the parent's: it admits each socket before spawning a
// child, so a flood of idle sockets costs no process beyond maxStartups, and it answers the child's
// questions (failures, backoff, the PROXY header's client) over the link in forking-ipc.ts.
//
// Keep this module light: `spawn` blocks the event loop in proportion to the parent's memory
// (nodejs/node#14917), so the parent must not load ssh2, grpc-js, NATS or the generated code. Only
// node built-ins, the logger, ids, refuse.ts, the limiter (preauth.ts, forking-ipc.ts) and the trusted-
// source check of proxy-protocol.ts are imported; types are erased.
import { spawn } from 'node:child_process';
import net from 'node:net';
import { newConnectionId } from '../common/ids.js';
import { errText, type Logger } from '../ops/log.js';
import type { ChildExit, PreauthRejectLabel } from '../ops/metrics.js';
import { PREAUTH_FD, PREAUTH_FD_ENV, serveChildLink } from './forking-ipc.js';
import {
  PreauthLimiter,
  refusalMessage,
  type Admission,
  type PreauthOptions,
  type PreauthTicket,
} from './preauth.js';
import { TrustedSources } from './proxy-protocol.js';
import { DISCONNECT, refuseSsh } from './refuse.js';

/** Environment variable carrying the parent's connection id to the child. */
export const CONNECTION_ID_ENV = 'SSH_PROXY_CONNECTION_ID';

export interface ChildRecord {
  readonly pid: number;
  readonly connectionId: string;
  readonly startedAt: Date;
  /** The TCP peer as the parent saw it (the child may learn the real client from a PROXY header). */
  readonly peer: string;
}

/** The metrics calls the parent makes (GatewayMetrics satisfies it). */
export interface ForkingMetrics {
  childStarted(): (exit: ChildExit) => void;
  preauthRejected(reason: PreauthRejectLabel): void;
  /** A socket holds a pre-authentication slot; call the returned function when it no longer does. */
  unauthenticated?(): () => void;
}

export interface ForkingOptions {
  /** Listen host; undefined = all interfaces. */
  host: string | undefined;
  port: number;
  /** Script the child runs (e.g. the CLI entry). */
  entry: string;
  /** Arguments after the entry, e.g. `['--config', path, '--child']`. */
  args: readonly string[];
  /** Node options for the child, e.g. `['--import', 'tsx']` when running from TypeScript. */
  execArgv?: readonly string[];
  /** Cap on running children (config `server.maxChildren`). */
  maxChildren: number;
  /** How long children may take after SIGTERM (config `server.drainTimeout` × 1000). */
  drainTimeoutMs: number;
  /** Extra wait after the drain timeout before leftover children are killed (default 5000 ms). */
  killGraceMs?: number;
  /** Our SSH identification string, for the "too many connections" refusal. */
  ident: string;
  /** Types of the configured host keys (checked at start by the caller), for the start-up line. */
  hostKeyTypes?: readonly string[];
  log: Logger;
  metrics?: ForkingMetrics;
  /** Base environment of the children (default process.env). */
  env?: NodeJS.ProcessEnv;
  /** Pre-authentication caps and backoff, applied by the parent across children; none when undefined. */
  preauth?: PreauthOptions;
  /**
   * PROXY protocol trusted sources (config `server.proxyProtocolTrustedCIDRs`) when it is on: a
   * socket from one of them is admitted under the global cap only, and attributed to the header's
   * client once its child has read it.
   */
  proxyTrustedCidrs?: readonly string[];
  /**
   * Keep retrying a port in use for this long (default 0). A new parent started during an upgrade
   * binds as soon as the old parent, told with SIGUSR2, has closed its listener.
   */
  bindRetryMs?: number;
}

function exitText(code: number | null, signal: NodeJS.Signals | null): string {
  return signal ? `signal: ${signal}` : `exit status ${code ?? '?'}`;
}

export class ForkingParent {
  private readonly table = new Map<number, ChildRecord>();
  private accepting = true;
  private draining: Promise<void> | undefined;
  private readonly emptied: (() => void)[] = [];
  private readonly limiter: PreauthLimiter | undefined;
  private readonly relays: TrustedSources | undefined;

  private constructor(
    private readonly o: ForkingOptions,
    private readonly server: net.Server,
  ) {
    this.limiter = o.preauth ? new PreauthLimiter(o.preauth) : undefined;
    this.relays = o.proxyTrustedCidrs ? new TrustedSources(o.proxyTrustedCidrs) : undefined;
  }

  /** Binds the listener and starts accepting. */
  static async start(o: ForkingOptions): Promise<ForkingParent> {
    o.log.info('Starting SSH proxy server');
    o.log.info({ ident: o.ident }, `SSH server version: ${o.ident}`);
    if (o.hostKeyTypes?.length)
      o.log.info(
        { hostKeyTypes: o.hostKeyTypes },
        `SSH server initialized with server key: ${o.hostKeyTypes.join(', ')}`,
      );
    const server = net.createServer({ pauseOnConnect: true });
    const parent = new ForkingParent(o, server);
    server.on('connection', (socket) => parent.accept(socket));
    await listenWithRetry(server, o.host, o.port, o.bindRetryMs ?? 0, o.log);
    // After the bind: its retries are not accept errors.
    server.on('error', (e) => o.log.error({ err: errText(e) }, 'Failed to accept connection'));
    const addr = server.address() as net.AddressInfo;
    o.log.info({ address: `${addr.address}:${addr.port}`, forking: true }, 'SSH proxy server listening');
    return parent;
  }

  get port(): number {
    return (this.server.address() as net.AddressInfo | null)?.port ?? 0;
  }

  /** Accepting new connections (false once draining or handing over). */
  get isAccepting(): boolean {
    return this.accepting;
  }

  get isDraining(): boolean {
    return this.draining !== undefined;
  }

  /** The running children. */
  children(): ChildRecord[] {
    return [...this.table.values()];
  }

  /** Admission of a new socket by its address, or by the global cap only when it comes from a relay. */
  private admit(ip: string): Admission | undefined {
    if (!this.limiter) return undefined;
    return this.relays?.trusts(ip) ? this.limiter.admitPending() : this.limiter.admit(ip);
  }

  private accept(socket: net.Socket): void {
    const { log } = this.o;
    if (!this.accepting) {
      socket.destroy();
      return;
    }
    const peer = `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? '?'}`;
    const connectionId = newConnectionId();
    // Before the child: a refused socket costs no process (the same refusal as in-process mode).
    const admission = this.admit(socket.remoteAddress ?? '');
    if (admission && !admission.ok) {
      log.warn(
        { conn: connectionId, client: peer, reason: admission.reason, why: admission.message },
        'connection refused before key exchange',
      );
      this.o.metrics?.preauthRejected(admission.reason);
      refuseSsh(socket, {
        ident: this.o.ident,
        reason: DISCONNECT.TOO_MANY_CONNECTIONS,
        message: refusalMessage(admission.reason),
      });
      return;
    }
    const ticket = admission?.ticket;
    if (this.table.size >= this.o.maxChildren) {
      ticket?.release();
      log.warn({ peer, children: this.table.size }, 'Too many child processes, refusing connection');
      this.o.metrics?.preauthRejected('max-children');
      refuseSsh(socket, {
        ident: this.o.ident,
        reason: DISCONNECT.TOO_MANY_CONNECTIONS,
        message: 'too many connections',
      });
      return;
    }
    const unauth = ticket ? this.o.metrics?.unauthenticated?.() : undefined;
    // Exactly once, whichever comes first: the child reports it authenticated, or it exits.
    let freed = false;
    const free = (): void => {
      if (freed) return;
      freed = true;
      ticket?.release();
      unauth?.();
    };
    let child;
    try {
      child = spawn(process.execPath, [...(this.o.execArgv ?? []), this.o.entry, ...this.o.args], {
        stdio: ['ignore', 'inherit', 'inherit', socket, ticket ? 'pipe' : 'ignore'],
        detached: true,
        env: {
          ...(this.o.env ?? process.env),
          [CONNECTION_ID_ENV]: connectionId,
          ...(ticket ? { [PREAUTH_FD_ENV]: String(PREAUTH_FD) } : {}),
        },
      });
    } catch (e) {
      free();
      log.error({ conn: connectionId, err: errText(e) }, 'Failed to start a child process');
      socket.destroy();
      return;
    }
    // The child has its own copy of the descriptor now. destroy(), not end(): a FIN from here would
    // shut down the connection the child is serving.
    socket.destroy();
    const pid = child.pid;
    if (pid === undefined) {
      free();
      child.once('error', (e) =>
        log.error({ conn: connectionId, err: errText(e) }, 'Failed to start a child process'),
      );
      return;
    }
    const record: ChildRecord = { pid, connectionId, startedAt: new Date(), peer };
    this.table.set(pid, record);
    const reaped = this.o.metrics?.childStarted();
    log.info({ conn: connectionId, childPid: pid, peer }, 'Child process started');
    const link = child.stdio[PREAUTH_FD];
    if (ticket && link instanceof net.Socket) {
      serveChildLink({
        sock: link,
        ticket: counted(ticket, free),
        log: log.child({ conn: connectionId, childPid: pid }),
        onRefused: (reason) => this.o.metrics?.preauthRejected(reason),
      });
    }
    child.on('error', (e) =>
      log.error({ conn: connectionId, childPid: pid, err: errText(e) }, 'Child process error'),
    );
    child.on('exit', (code, signal) => {
      this.table.delete(pid);
      free();
      reaped?.(code === 0 ? 'ok' : signal ? 'signal' : 'error');
      if (code !== 0) {
        log.error(
          { conn: connectionId, childPid: pid, code, signal },
          `Subprocess exited with error, pid: ${pid}, error: ${exitText(code, signal)}`,
        );
      }
      if (this.table.size === 0) for (const f of this.emptied.splice(0)) f();
    });
  }

  private closeListener(): Promise<void> {
    this.accepting = false;
    return new Promise((resolve) => this.server.close(() => resolve()));
  }

  /** SIGTERM: stop accepting, SIGTERM every child, wait up to the drain timeout (+ grace), kill leftovers. */
  drain(): Promise<void> {
    this.draining ??= (async () => {
      const { log } = this.o;
      await this.closeListener();
      const pids = [...this.table.keys()];
      log.info(
        { children: pids.length, drainTimeoutMs: this.o.drainTimeoutMs },
        'Draining: forwarding SIGTERM to children',
      );
      for (const pid of pids) signal(pid, 'SIGTERM');
      const limit = this.o.drainTimeoutMs + (this.o.killGraceMs ?? 5000);
      if (await this.waitEmpty(limit)) return;
      for (const c of this.table.values()) {
        log.warn(
          { conn: c.connectionId, childPid: c.pid },
          'Child still running after the drain timeout, killing it',
        );
        signal(c.pid, 'SIGKILL');
      }
      await this.waitEmpty(2000);
    })();
    return this.draining;
  }

  /** SIGUSR2: close the listener so that a new parent can bind; the children are left alone. */
  async handOver(): Promise<void> {
    await this.closeListener();
    this.o.log.info({ children: this.table.size }, 'Listener closed for a new parent; children keep serving');
  }

  private waitEmpty(ms: number): Promise<boolean> {
    if (this.table.size === 0) return Promise.resolve(true);
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        resolve(true);
      };
      const timer = setTimeout(() => {
        const i = this.emptied.indexOf(done);
        if (i >= 0) this.emptied.splice(i, 1);
        resolve(false);
      }, ms);
      this.emptied.push(done);
    });
  }

  /**
   * SIGTERM/SIGINT → drain, then exit(0); a second one → exit(1) at once. SIGUSR2 → hand over, then
   * exit(0). `exit` is injectable for tests.
   */
  installSignalHandlers(exit: (code: number) => void = (c) => process.exit(c)): void {
    const { log } = this.o;
    let stopping = false;
    const stop = (sig: NodeJS.Signals): void => {
      if (stopping) {
        log.warn({ signal: sig }, 'Second shutdown signal, exiting immediately');
        exit(1);
        return;
      }
      stopping = true;
      log.info({ signal: sig }, 'Received shutdown signal, stopping server...');
      this.drain().then(
        () => exit(0),
        () => exit(1),
      );
    };
    process.on('SIGTERM', stop);
    process.on('SIGINT', stop);
    process.on('SIGUSR2', () => {
      if (stopping) return;
      stopping = true;
      log.info({ signal: 'SIGUSR2' }, 'Received SIGUSR2, handing over to a new parent');
      this.handOver().then(
        () => exit(0),
        () => exit(1),
      );
    });
  }
}

/** `t` whose every way of freeing its slot (release, success, refused attribution) also runs `free`. */
function counted(t: PreauthTicket, free: () => void): PreauthTicket {
  return {
    get source() {
      return t.source;
    },
    refused: () => t.refused(),
    failed: (user) => t.failed(user),
    succeeded: (user) => {
      t.succeeded(user);
      free();
    },
    release: free,
    attribute: (ip) => {
      const r = t.attribute(ip);
      if (!r.ok) free();
      return r;
    },
  };
}

/** Sends a signal to a child we spawned and have not reaped (so the pid cannot have been reused). */
function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    // Already gone; its 'exit' event is on its way.
  }
}

async function listenWithRetry(
  server: net.Server,
  host: string | undefined,
  port: number,
  retryMs: number,
  log: Logger,
): Promise<void> {
  const deadline = Date.now() + retryMs;
  let warned = false;
  for (;;) {
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen({ host, port }, () => {
          server.off('error', reject);
          resolve();
        });
      });
      return;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EADDRINUSE' || Date.now() >= deadline) throw e;
      if (!warned) log.warn({ port }, 'Port in use (an old parent handing over?); retrying');
      warned = true;
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}

/** Options from the configuration and the CLI (the child gets the same config and log format). */
export function forkingOptionsFromConfig(
  server: {
    bindAddress: string;
    port: number;
    maxChildren: number;
    drainTimeout: number;
    proxyProtocol?: boolean;
    proxyProtocolTrustedCIDRs?: readonly string[];
  },
  cli: { configPath: string; logtext: boolean; entry?: string; execArgv?: readonly string[] },
  deps: { ident: string; log: Logger; metrics?: ForkingMetrics; preauth?: PreauthOptions },
): ForkingOptions {
  return {
    host: server.bindAddress || undefined,
    port: server.port,
    entry: cli.entry ?? process.argv[1] ?? '',
    // Unlike the reference we pass no empty-string argument in JSON mode: our flag parser rejects it.
    args: ['--config', cli.configPath, '--child', ...(cli.logtext ? ['--logtext'] : [])],
    execArgv: cli.execArgv ?? process.execArgv,
    maxChildren: server.maxChildren,
    drainTimeoutMs: server.drainTimeout * 1000,
    ident: deps.ident,
    log: deps.log,
    metrics: deps.metrics,
    preauth: deps.preauth,
    proxyTrustedCidrs: server.proxyProtocol ? (server.proxyProtocolTrustedCIDRs ?? []) : undefined,
    bindRetryMs: 10_000,
  };
}
