// The configuration structure: the reference's keys (reference-behaviour.md §2.2), spelled as in its
// YAML, plus this project's additions (marked "Ours"). Numbers and booleans are coerced because a
// substituted `${VAR}` is always a string. Cross-key rules and reference messages live in validate.ts.
import { z } from 'zod';
import {
  bool,
  isCidr,
  unset,
  num,
  objList,
  optBool,
  section,
  seconds,
  show,
  str,
  strList,
} from './primitives.js';

/** Ciphers ssh2 implements that are still considered sound; `server.ciphers` entries must be among them. */
export const KNOWN_CIPHERS = [
  'aes128-gcm@openssh.com',
  'aes256-gcm@openssh.com',
  'chacha20-poly1305@openssh.com',
  'aes128-ctr',
  'aes192-ctr',
  'aes256-ctr',
] as const;

/**
 * The reference's set (Go x/crypto defaults), fast ones first. The client's preference decides
 * (OpenSSH picks chacha20-poly1305), so every cipher here must be fast with ssh2's native binding;
 * docs/clients.md has the measurements. AES-CTR is for clients without AEAD ciphers (libssh2 1.10).
 */
export const DEFAULT_CIPHERS = [
  'aes128-gcm@openssh.com',
  'aes256-gcm@openssh.com',
  'chacha20-poly1305@openssh.com',
  'aes128-ctr',
  'aes192-ctr',
  'aes256-ctr',
];

export const DEFAULT_SFTP_BINARY = '/usr/local/bin/sftp';
/** Ours: env names accepted by default (sshd's AcceptEnv): locale, terminal programs, git, k8shell. */
export const DEFAULT_ACCEPT_ENV = [
  'LANG',
  'LC_*',
  'LANGUAGE',
  'TZ',
  'COLORTERM',
  'TERM_PROGRAM',
  'TERM_PROGRAM_VERSION',
  'GIT_PROTOCOL',
  'VSCODE_*',
  'K8SHELL_*',
];
export const DEFAULT_RECORDING_BUFFER_BYTES = 8 * 1024 * 1024;
export const DEFAULT_K8SHELLD_CA = '/etc/k8shell/ca/ca.crt';
export const DEFAULT_ISSUER_URL = 'https://kubernetes.default.svc.cluster.local';

const cipher = z.string().refine((c) => (KNOWN_CIPHERS as readonly string[]).includes(c), {
  error: (iss) => `unknown cipher ${show(iss.input)} (want one of ${KNOWN_CIPHERS.join(', ')})`,
});
const cidr = z.string().refine(isCidr, {
  error: (iss) => `invalid CIDR ${show(iss.input)} (want an address or address/prefix)`,
});

/** gRPC client settings; a client is enabled when `address` is non-empty. */
const clientShape = {
  address: str(''),
  serverName: str(''),
  tokenFilePath: str(''),
  caCertPath: str(''),
};

const vscodeShape = {
  /** Extract VS Code integrated terminals from forwards. Unset = true when session.address is set. */
  terminals: optBool(),
  /** Also record their input. Unset = true when session.address is set. */
  recordInput: optBool(),
};

/** Per-stream recording options; unset fields mean "service default". */
const streamShape = {
  /** "", asciinema, pcapng or none (checked in validate.ts with the reference's message). */
  format: str(''),
  gzip: optBool(),
  /** Only valid on directTCPIP (validate.ts). */
  vscode: z.preprocess(unset, z.object(vscodeShape).optional()),
};

export const configSchema = z.object({
  server: section({
    /** SSH listen port; required (0 = "port must be set"). */
    port: num(0, { min: 0, max: 65535 }),
    /** Host private key path. Ours: also a list of paths (one key per type). Normalised to a list. */
    serverKey: strList([]),
    /** One child process per connection. */
    forking: bool(false),
    /** Parse a PROXY protocol header (ours: v1 and v2). */
    proxyProtocol: bool(false),
    /** Seconds for key exchange plus authentication; 0 → 30. */
    SSHHandshakeTimeout: seconds(0, { min: 0 }),
    /** Concurrent direct-tcpip channels per connection; 0 → 15. */
    maxDirectTCPIPConnections: num(0, { min: 0 }),
    writerOptions: section({
      showProvisionInfo: bool(false),
      showPulse: bool(false),
      showPercentage: bool(false),
      showErrors: bool(false),
      showSystemErrors: bool(false),
    }),
    /** Command run in the workspace for the sftp subsystem; "" → /usr/local/bin/sftp. */
    sftpBinary: str(''),
    publishSshFailures: section({
      enabled: bool(false),
      subject: str(''),
      publicIPOnly: bool(false),
      /** Parsed but unused, as in the reference. */
      whitelist: strList([]),
    }),
    recording: section({
      recordShell: bool(false),
      recordExec: bool(false),
      recordSFTP: bool(false),
      recordDirectTCPIP: bool(false),
      /** Per-recording send-queue limit in bytes; 0 → 8 MiB; negative is an error. */
      bufferBytes: num(0),
      shell: section(streamShape),
      exec: section(streamShape),
      sftp: section(streamShape),
      directTCPIP: section(streamShape),
      /**
       * Ours: what happens when a recording stream cannot be opened or breaks. `open` (the reference):
       * log and let the channel run unrecorded. `closed`: refuse the channel (and end a running one).
       */
      failPolicy: z.preprocess(
        unset,
        z
          .enum(['open', 'closed'], {
            error: (iss) => `expected "open" or "closed", got ${show(iss.input)}`,
          })
          .default('open'),
      ),
    }),
    /** Ours: listen address; "" = all interfaces (the reference binds `:<port>`). */
    bindAddress: str(''),
    /** Ours: authentication attempts per connection (the reference's fixed value). */
    maxAuthTries: num(6, { min: 1 }),
    /** Ours: seconds between SSH keepalives to the client; 0 = off. */
    keepaliveInterval: seconds(15, { min: 0 }),
    /** Ours: unanswered keepalives before the connection is dropped. */
    keepaliveCountMax: num(3, { min: 1 }),
    /** Ours: SSH ciphers offered, in order; each must be in KNOWN_CIPHERS. */
    ciphers: strList(DEFAULT_CIPHERS, cipher).refine((l) => l.length > 0, { error: 'must not be empty' }),
    /** Ours: seconds to wait for a complete PROXY header before closing the connection. */
    proxyProtocolTimeout: seconds(5, { min: 0.001 }),
    /** Ours: sources allowed to send a PROXY header; empty = every source (the reference). */
    proxyProtocolTrustedCIDRs: strList([], cidr),
    /** Ours: cap on concurrent unauthenticated connections. */
    maxStartups: num(100, { min: 1 }),
    /** Ours: cap on concurrent unauthenticated connections from one source (IPv4 address or IPv6 /64). */
    maxStartupsPerSource: num(10, { min: 1 }),
    /**
     * Ours: authentication-failure backoff per source and per user (docs/operating.md). Failures beyond
     * `freeFailures` are answered after a delay that doubles from `baseDelay` up to `maxDelay` (per
     * user at most `maxUserDelay`); a source with `refuseAfter` failures is refused for `refuseFor`.
     * Counters are forgotten after `forgetAfter` without failures.
     */
    authBackoff: section({
      freeFailures: num(10, { min: 0 }),
      baseDelay: seconds(0.25, { min: 0 }),
      maxDelay: seconds(8, { min: 0 }),
      maxUserDelay: seconds(2, { min: 0 }),
      refuseAfter: num(30, { min: 1 }),
      refuseFor: seconds(600, { min: 0 }),
      forgetAfter: seconds(1800, { min: 0 }),
    }),
    /** Ours: forking mode's cap on child processes (one per connection); beyond it connections are refused. */
    maxChildren: num(1000, { min: 1 }),
    /** Ours: seconds open connections may take to finish after SIGTERM before they are disconnected. */
    drainTimeout: seconds(30, { min: 0 }),
    /** Ours: concurrent session channels per connection (sshd's MaxSessions). */
    maxSessions: num(10, { min: 1 }),
    /** Ours: concurrent direct-streamlocal channels per connection (the reference has no limit). */
    maxStreamLocalConnections: num(15, { min: 1 }),
    /** Ours: `env` names a session accepts (sshd's AcceptEnv; `*` and `?` patterns). */
    acceptEnv: strList(DEFAULT_ACCEPT_ENV),
    /** Ours: at most this many accepted `env` variables per session… */
    maxEnvCount: num(64, { min: 0 }),
    /** Ours: …and this many bytes of names and values in all. */
    maxEnvBytes: num(64 * 1024, { min: 0 }),
    /**
     * Ours: seconds a keyboard-interactive onboarding (device flow) may wait for the person's approval,
     * never beyond the code's expires_in; the login grace time does not run while its prompt is shown.
     */
    onboardingTimeout: seconds(600, { min: 1 }),
  }),
  grpc: section({
    /** Control gRPC server port; 0 = disabled. */
    port: num(0, { min: 0, max: 65535 }),
    /** Ours: listen address of the control server; "" = all interfaces (the reference binds `:<port>`). */
    bindAddress: str(''),
    enableTLS: bool(false),
    certFile: str(''),
    keyFile: str(''),
    /** Certificate hot-reload delay; number of seconds or Go duration; normalised to seconds. */
    certReloadDelay: seconds(0, { min: 0 }),
    authEnabled: bool(false),
    issuerURL: str(DEFAULT_ISSUER_URL),
    audience: str(''),
    /** Allowed callers; empty namespace = own namespace; `*` = wildcard. */
    allowed: objList({ namespace: str(''), serviceAccount: str('') }),
    /**
     * Ours: also serve sshproxy.admin.v1.SSHProxyAdminService (list and end live connections) on the
     * same port, behind the same TLS and authentication. Off by default: enable it with authEnabled or
     * on a network only operators reach.
     */
    adminService: bool(false),
  }),
  nats: section({
    enabled: bool(false),
    url: str(''),
    username: str(''),
    password: str(''),
    token: str(''),
    /** 0 (or negative) → -1 = reconnect forever. */
    maxReconnects: num(0),
    /** Seconds (number or Go duration); 0 → 2. */
    reconnectWait: seconds(0, { min: 0 }),
  }),
  identity: section(clientShape),
  provisioner: section({
    ...clientShape,
    /** Ours: seconds a provision/start stream may take (the reference's fixed 120 s). */
    timeout: seconds(120, { min: 0.001 }),
  }),
  session: section({
    ...clientShape,
    /** Ours: seconds between UpsertSession heartbeats of a connection (the reference's fixed 10 s). */
    heartbeatInterval: seconds(10, { min: 0.1 }),
    /** Ours: deadline in seconds of each unary session-service call (Upsert/End*). */
    timeout: seconds(10, { min: 0.1 }),
  }),
  authz: section({
    ...clientShape,
    /** Ours: seconds one Evaluate may take; beyond it the action is denied. */
    timeout: seconds(5, { min: 0.001 }),
  }),
  k8shelld: section({
    ...clientShape,
    /** Ours: configurable; default is the reference's fixed daemon CA path. */
    caCertPath: str(DEFAULT_K8SHELLD_CA),
    /** Ours: seconds for the daemon Handshake call (the reference's fixed 5 s). */
    handshakeTimeout: seconds(5, { min: 0.001 }),
    /** Ours: seconds a forward waits for the workspace to dial its destination. */
    dialTimeout: seconds(30, { min: 0.001 }),
    /** Ours: HTTP/2 keepalive ping interval on workspace connections, seconds (0 = off). */
    keepaliveTime: seconds(30, { min: 0 }),
    /** Ours: seconds a keepalive ping may stay unanswered before the workspace counts as lost. */
    keepaliveTimeout: seconds(10, { min: 0.001 }),
  }),
  metrics: section({
    /** Ours: host:port for /metrics, /healthz and /readyz; "" = off. */
    address: str(''),
  }),
  log: section({
    /**
     * Ours: exec command lines in logs. `summary`: program name and length at info, the full line
     * only at debug (command lines carry passwords and tokens). `full`: the full line at info.
     */
    commands: z.preprocess(
      unset,
      z
        .enum(['summary', 'full'], {
          error: (iss) => `expected "summary" or "full", got ${show(iss.input)}`,
        })
        .default('summary'),
    ),
  }),
});

export type Config = z.output<typeof configSchema>;
export type RecordingStreamName = 'shell' | 'exec' | 'sftp' | 'directTCPIP';
export type RecordingStreamConfig = Config['server']['recording'][RecordingStreamName];
export type ClientConfig = Config['identity'];
