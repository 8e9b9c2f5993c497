// The whole system on one machine: the local identity, provisioner, policy (authz) and session
// services (real gRPC servers on loopback), optionally a NATS server, and the gateway configured from
// config/local.yaml and assembled exactly as in production (createServices), with local peers.
import { existsSync, readdirSync, writeFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { homedir, userInfo } from 'node:os';
import { join, resolve } from 'node:path';
import { getLogger, type Logger } from '../ops/log.js';
import { loadConfig } from '../config/load.js';
import { generateHostKey } from '../gateway/hostkeys.js';
import {
  createGateway,
  gatewayOptionsFromConfig,
  type GatewayBackends,
  type RunningGateway,
} from '../gateway/server.js';
import { createServices } from '../gateway/services.js';
import { GatewayMetrics } from '../ops/metrics.js';
import { startMemoryTrimmer } from '../ops/native-memory.js';
import { tuneHeap } from '../ops/heap-tuning.js';
import {
  ensureLocalBuckets,
  natsServerAvailable,
  startLocalNats,
  useLocalNats,
  type LocalNats,
} from './nats-server.js';
import { startLocalSessions, type LocalSessions } from './sessions/index.js';
import { startLocalIdentity, type LocalIdentity } from './identity.js';
import { startLocalPolicy, type LocalPolicy } from './policy.js';
import { startLocalProvisioner, type LocalProvisioner } from './provisioner.js';
import { startLocalWeb, type LocalWeb } from './web/server.js';
import { createStackTokens, ensureStackDir, requireStrictMode, type StackTokens } from './hardening.js';
import { createAccountResolver } from './os-accounts.js';
import { UserStore } from './users.js';

const REPO = resolve(new URL('../..', import.meta.url).pathname);

export interface LocalStackOptions {
  /** host:port of the SSH listener (port 0 = ephemeral). */
  listen: string;
  dataDir: string;
  /** Config file in the reference format; default config/local.yaml of this repository. */
  configPath?: string;
  /** How the provisioner runs the agent; default the built dist/cli/agent.js. */
  agentCommand?: string[];
  /** Home whose .ssh authorises the OS user (default: the real home). */
  homeDir?: string;
  idleTimeoutMs?: number;
  /** Simulated image pull before each workspace start (local provisioner `pullDelayMs`). */
  pullDelayMs?: number;
  /** Gateway collaborators that have no config key (tests: fault hooks, a stand-in authorizer). */
  backends?: Partial<Pick<GatewayBackends, 'authorizer' | 'userToken' | 'hooks' | 'recorders' | 'overrides'>>;
  /** Start Debian's nats-server (JetStream, loopback) and point the gateway at it (`npm start -- --nats`). */
  nats?: boolean;
  /** Extra config overrides, applied after loading (tests use it for sftpBinary etc.). */
  override?: (cfg: Awaited<ReturnType<typeof loadConfig>>['config']) => void;
  logger?: Logger;
  /** host:port of the local web pages (onboarding approval); default 127.0.0.1:0. */
  webListen?: string;
  /** Validity of onboarding codes in seconds (default 600). */
  onboardingExpiresInS?: number;
  /** Workspaces one user may have in the local provisioner (default 10; docs/security.md). */
  maxWorkspacesPerUser?: number;
}

export interface LocalStack {
  gateway: RunningGateway;
  /** Replaceable, so tests can take identity down and bring it back on the same address. */
  identity: LocalIdentity;
  provisioner: LocalProvisioner;
  /** The local authz service (rules in <data-dir>/policy.yaml). */
  policy: LocalPolicy;
  /** The local session service (sessions and recordings under <data-dir>/recordings). */
  sessions: LocalSessions;
  /** The local web server (onboarding approval and sessions pages). */
  web: LocalWeb;
  /** Where a person approves a new user's onboarding. */
  approvalUrl: string;
  /** The sessions page (live and ended sessions, recordings with a player). */
  sessionsUrl: string;
  /** The NATS server started with `nats: true`. */
  nats: LocalNats | undefined;
  metrics: GatewayMetrics;
  /** A client key the stack created because the OS user had none, else undefined. */
  clientKey: string | undefined;
  /** This run's service tokens (only the gateway's clients read them; docs/security.md). */
  tokens: StackTokens;
  /** True when each user's workspace runs as its own OS account (the stack runs as root). */
  multiTenant: boolean;
  sshCommand: string;
  stop(): Promise<void>;
}

export async function startLocalStack(opts: LocalStackOptions): Promise<LocalStack> {
  const log = opts.logger ?? getLogger('local-stack');
  const dataDir = resolve(opts.dataDir);
  const multiTenant = process.getuid?.() === 0;
  // StrictModes: a data dir, users.yaml or policy.yaml others can write is refused (docs/security.md).
  // As root the data dir is 0711 so each workspace account can reach its own home and list nothing.
  ensureStackDir(dataDir, multiTenant ? 0o711 : 0o700);
  requireStrictMode(join(dataDir, 'users.yaml'));
  requireStrictMode(join(dataDir, 'policy.yaml'));
  const tokens = createStackTokens(dataDir);
  if (!multiTenant)
    log.warn(
      'the local stack runs as an ordinary user: every workspace runs as that user (single-tenant; docs/security.md)',
    );
  const hostKey = join(dataDir, 'ssh_host_ed25519_key');
  if (!existsSync(hostKey))
    log.info({ path: hostKey }, 'generating the gateway host key (kept for later runs)');
  generateHostKey(hostKey);
  const home = opts.homeDir ?? homedir();
  const clientKey = ensureClientKey(dataDir, home, log);

  const [webHost, webPort] = splitHostPort(opts.webListen ?? '127.0.0.1:0');
  const web = await startLocalWeb({ host: webHost, port: webPort }, getLogger('local-web'));
  let identity: LocalIdentity;
  try {
    // Unknown users may onboard: the approval page is on `web` (docs/policy.md).
    identity = await startLocalIdentity({
      dataDir,
      homeDir: home,
      logger: getLogger('identity'),
      tokenFile: tokens.files.identity,
      onboarding: { web, expiresInS: opts.onboardingExpiresInS },
    });
  } catch (e) {
    await web.close();
    throw e;
  }
  let provisioner: LocalProvisioner | undefined;
  let policy: LocalPolicy | undefined;
  let sessions: LocalSessions | undefined;
  let nats: LocalNats | undefined;
  try {
    provisioner = await startLocalProvisioner({
      dataDir,
      agentCommand: opts.agentCommand,
      idleTimeoutMs: opts.idleTimeoutMs,
      pullDelayMs: opts.pullDelayMs,
      logger: getLogger('provisioner'),
      tokenFile: tokens.files.provisioner,
      agentTokenFile: tokens.files.agent,
      accounts: createAccountResolver(
        new UserStore({ dataDir, homeDir: home, log: getLogger('provisioner') }),
      ),
      maxWorkspacesPerUser: opts.maxWorkspacesPerUser,
    });
    policy = await startLocalPolicy({
      dataDir,
      logger: getLogger('policy'),
      tokenFile: tokens.files.authz,
    });
    sessions = await startLocalSessions({
      dataDir,
      web,
      logger: getLogger('session'),
      tokenFile: tokens.files.session,
    });
    if (opts.nats) {
      if (!natsServerAvailable())
        throw new Error('--nats needs nats-server (Debian package nats-server) on the PATH');
      nats = await startLocalNats({
        dataDir,
        logger: getLogger('nats-server'),
        auth: { token: tokens.natsToken },
      });
      await ensureLocalBuckets(nats.url, 5000, tokens.natsToken);
    }
    const [host, port] = splitHostPort(opts.listen);
    const { config, warnings } = await loadConfig(opts.configPath ?? join(REPO, 'config/local.yaml'), {
      ...process.env,
      LOCAL_SSH_HOST: host,
      // The reference requires a port; an ephemeral listener (0) gets its real port below.
      LOCAL_SSH_PORT: String(port || 1),
      LOCAL_DATA_DIR: dataDir,
      LOCAL_IDENTITY_ADDR: identity.address,
      LOCAL_PROVISIONER_ADDR: provisioner.address,
      LOCAL_AUTHZ_ADDR: policy.address,
      LOCAL_SESSION_ADDR: sessions.address,
    });
    for (const w of warnings) log.warn(w);
    if (nats) useLocalNats(config, nats.url, tokens.natsToken);
    // Every client of the gateway authenticates with this run's token, re-read on every call.
    config.identity.tokenFilePath = tokens.files.identity;
    config.provisioner.tokenFilePath = tokens.files.provisioner;
    config.authz.tokenFilePath = tokens.files.authz;
    config.session.tokenFilePath = tokens.files.session;
    config.k8shelld.tokenFilePath = tokens.files.agent;
    opts.override?.(config);
    const metrics = new GatewayMetrics();
    const services = createServices(config, { metrics });
    let gateway: RunningGateway;
    try {
      gateway = await createGateway(
        { ...gatewayOptionsFromConfig(config), port },
        { ...services.backends, ...opts.backends },
        getLogger('ssh-server'),
      );
    } catch (e) {
      await services.close();
      throw e;
    }
    services.attach(gateway.registry);
    // Process-wide, like the trimmer: this process runs the gateway (src/ops/heap-tuning.ts says why).
    tuneHeap();
    const trimmer = startMemoryTrimmer({ log: getLogger('memory'), onTrim: (n) => metrics.memoryTrimmed(n) });
    const user = userInfo().username;
    const keyOpt = clientKey ? ` -i ${clientKey}` : '';
    const sshCommand = `ssh -p ${gateway.port}${keyOpt} -o StrictHostKeyChecking=accept-new ${user}@${gateway.host}`;
    const stack: LocalStack = {
      gateway,
      identity,
      provisioner,
      policy,
      sessions,
      web,
      approvalUrl: identity.approvalUrl ?? `${web.url}/onboard`,
      sessionsUrl: sessions.pageUrl ?? `${web.url}/sessions`,
      nats,
      metrics,
      clientKey,
      tokens,
      multiTenant,
      sshCommand,
      async stop() {
        trimmer?.stop();
        await gateway.stop();
        await services.close();
        await stack.provisioner.close();
        await stack.identity.close();
        await policy?.close();
        await sessions?.close();
        await nats?.stop();
        await web.close();
      },
    };
    return stack;
  } catch (e) {
    await provisioner?.close();
    await policy?.close();
    await sessions?.close();
    await nats?.stop();
    await identity.close();
    await web.close();
    throw e;
  }
}

function splitHostPort(s: string): [string, number] {
  const m = /^\[?([^\]]*)\]?:(\d+)$/.exec(s);
  if (!m) throw new Error(`--listen expects HOST:PORT, got "${s}"`);
  return [m[1] ?? '127.0.0.1', Number(m[2])];
}

/**
 * The OS user logs in with the keys in ~/.ssh. When there are none, make one in the data dir and
 * authorise it through users.yaml, so the printed ssh command works on a fresh machine.
 */
function ensureClientKey(dataDir: string, home: string, log: Logger): string | undefined {
  const sshDir = join(home, '.ssh');
  const hasKeys =
    existsSync(join(sshDir, 'authorized_keys')) ||
    (existsSync(sshDir) && readdirSync(sshDir).some((f) => f.endsWith('.pub')));
  if (hasKeys) return undefined;
  const key = join(dataDir, 'client_ed25519');
  if (!existsSync(key)) {
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'ssh-proxy local stack', '-f', key]);
    log.info({ path: key }, 'no SSH key in ~/.ssh: created a client key for the local stack');
  }
  const usersFile = join(dataDir, 'users.yaml');
  if (!existsSync(usersFile)) {
    const pub = execFileSync('ssh-keygen', ['-y', '-f', key]).toString().trim();
    writeFileSync(
      usersFile,
      `# Users of the local identity service (see README). The OS user is always known;\n` +
        `# this entry adds the key the local stack generated for it.\nusers:\n` +
        `  - name: ${userInfo().username}\n    authorizedKeys:\n      - ${JSON.stringify(pub)}\n`,
      { mode: 0o600 },
    );
  }
  return key;
}
