// Command-line options of `npm run bench`, with the defaults and a --quick profile for the smoke test.
import { parseArgs } from 'node:util';

export const SCENARIO_GROUPS = [
  'setup',
  'latency',
  'exec',
  'forward',
  'sftp',
  'sessions',
  'rate',
  'forking',
  'aging',
  'cores',
] as const;
export type ScenarioGroup = (typeof SCENARIO_GROUPS)[number];

export interface BenchOptions {
  size: number;
  fwdSize: number;
  sftpSize: number;
  runs: number;
  setupRuns: number;
  rttCount: number;
  sessions: number[];
  rateSessions: number;
  rateConcurrency: number;
  /** Idle connections held by the process-model (forking) scenario. */
  forkConnections: number;
  cipher: string;
  /** Key exchange for every client; undefined = the client's default preference. */
  kex: string | undefined;
  scenarios: ScenarioGroup[];
  json: string;
  quick: boolean;
  /** Run the agent from src/ through tsx instead of dist/ (the smoke test does not build). */
  tsxAgent: boolean;
  /** Also run a recording gateway for the `(recorded)` download scenarios (off: --no-recording). */
  recording: boolean;
  aging: {
    size: number;
    connections: number;
    concurrency: number;
    loadConnections: number;
    loadSize: number;
    loadWaitS: number;
  };
  cores: { streams: number; size: number };
  /**
   * Environment of this build's gateway processes and their agents only (not the baseline's, not sshd),
   * e.g. MALLOC_ARENA_MAX=2 with `--baseline` of the same checkout: an A/B of the setting.
   */
  gatewayEnv: Record<string, string>;
  /** A/B: a checkout (or its dist/) whose build runs as a second gateway stack beside this one. */
  baseline: string | undefined;
  /** `--compare OLD.json`: print the change per scenario from OLD to `json` instead of running. */
  compare: string | undefined;
}

export const USAGE = `Usage: npm run bench -- [options]
  --size N            exec throughput bytes (default 1G; suffixes K, M, G)
  --fwd-size N        -L throughput bytes (default 512M)
  --sftp-size N       sftp file size (default 256M)
  --runs N            interleaved A/B runs per throughput scenario (default 5)
  --setup-runs N      connection set-up runs (default 50)
  --rtt-count N       interactive echo round trips (default 1000)
  --sessions LIST     concurrent idle PTY sessions (default 100,500,1000)
  --rate-sessions N   sessions for the connection-rate test (default 200, concurrency 20)
  --fork-conns N      idle connections of the forking/in-process memory figure (default 20)
  --cipher NAME       SSH cipher for every client (default aes128-gcm@openssh.com)
  --kex NAME          pin the key exchange for every client (default: the OpenSSH client's preference)
  --scenarios LIST    subset of ${SCENARIO_GROUPS.join(',')}
  --json FILE         result file (default bench/results/latest.json)
  --quick             tiny sizes (smoke test)
  --tsx-agent         run the agent from src/ through tsx (no build needed)
  --no-recording      skip the recorded gateway (exec download (recorded), -L download (recorded))
  --aging-conns N     aging: \`ssh host true\` connections between fresh and aged downloads (default 1000)
  --aging-size N      aging: bytes of each exec download (default: --size)
  --aging-concurrency N  aging: those connections at once (default 4)
  --load-conns N      aging: concurrent connections of the load burst (default 50)
  --load-size N       aging: bytes each of them moves up and down (default 32M)
  --load-wait S       aging: seconds after the burst at which memory is read (default 60)
  --cores-streams N   cores: concurrent exec downloads (default 8)
  --cores-size N      cores: bytes of each (default 256M)
  --baseline DIR      A/B: also run a gateway stack built from another checkout (DIR or DIR/dist, built),
                      interleaved with this one and sshd; reports both and current/baseline
  --gateway-env K=V   environment of this build's gateway and agent processes only (repeatable; with
                      --baseline of the same checkout: an A/B of the setting, e.g. MALLOC_ARENA_MAX=2)
  --compare OLD.json  print the change per scenario from OLD.json to the --json file (no run)
`;

/** Parses "512M", "1G", "64k", "1000" into bytes (binary multiples). */
export function parseSize(s: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([kmgKMG]?)(?:i?[bB])?$/.exec(s.trim());
  if (!m) throw new Error(`bad size "${s}" (expected a number with an optional K, M or G suffix)`);
  const mult = { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3 }[(m[2] ?? '').toLowerCase()] ?? 1;
  const n = Math.round(Number(m[1]) * mult);
  if (!Number.isFinite(n) || n < 1) throw new Error(`size "${s}" must be at least 1 byte`);
  return n;
}

function positiveInt(name: string, s: string): number {
  const n = Number(s);
  if (!Number.isInteger(n) || n < 1) throw new Error(`--${name} must be a positive integer, got "${s}"`);
  return n;
}

export function parseOptions(argv: string[]): BenchOptions {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    options: {
      size: { type: 'string' },
      'fwd-size': { type: 'string' },
      'sftp-size': { type: 'string' },
      runs: { type: 'string' },
      'setup-runs': { type: 'string' },
      'rtt-count': { type: 'string' },
      sessions: { type: 'string' },
      'rate-sessions': { type: 'string' },
      'fork-conns': { type: 'string' },
      cipher: { type: 'string', default: 'aes128-gcm@openssh.com' },
      kex: { type: 'string' },
      scenarios: { type: 'string' },
      json: { type: 'string', default: 'bench/results/latest.json' },
      quick: { type: 'boolean', default: false },
      'tsx-agent': { type: 'boolean', default: false },
      'no-recording': { type: 'boolean', default: false },
      'aging-conns': { type: 'string' },
      'aging-size': { type: 'string' },
      'aging-concurrency': { type: 'string' },
      'load-conns': { type: 'string' },
      'load-size': { type: 'string' },
      'load-wait': { type: 'string' },
      'cores-streams': { type: 'string' },
      'cores-size': { type: 'string' },
      baseline: { type: 'string' },
      'gateway-env': { type: 'string', multiple: true },
      compare: { type: 'string' },
    },
  });
  const q = values.quick === true;
  const scenarios = (values.scenarios ?? SCENARIO_GROUPS.join(','))
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  for (const s of scenarios)
    if (!(SCENARIO_GROUPS as readonly string[]).includes(s))
      throw new Error(`unknown scenario "${s}" (known: ${SCENARIO_GROUPS.join(', ')})`);
  const sessions = (values.sessions ?? (q ? '5' : '100,500,1000'))
    .split(',')
    .map((s) => positiveInt('sessions', s));
  const runs = positiveInt('runs', values.runs ?? (q ? '2' : '5'));
  if (!q && runs < 5) process.stderr.write('warning: fewer than 5 runs; medians will be noisy\n');
  if (!/^[\w.@-]+$/.test(values.cipher)) throw new Error(`bad cipher name "${values.cipher}"`);
  if (values.kex !== undefined && !/^[\w.@-]+$/.test(values.kex))
    throw new Error(`bad kex name "${values.kex}"`);
  const size = parseSize(values.size ?? (q ? '1M' : '1G'));
  const loadWait = Number(values['load-wait'] ?? (q ? '1' : '60'));
  if (!Number.isFinite(loadWait) || loadWait < 0) throw new Error(`--load-wait must be seconds >= 0`);
  return {
    size,
    fwdSize: parseSize(values['fwd-size'] ?? (q ? '1M' : '512M')),
    sftpSize: parseSize(values['sftp-size'] ?? (q ? '1M' : '256M')),
    runs,
    setupRuns: positiveInt('setup-runs', values['setup-runs'] ?? (q ? '3' : '50')),
    rttCount: positiveInt('rtt-count', values['rtt-count'] ?? (q ? '20' : '1000')),
    sessions,
    rateSessions: positiveInt('rate-sessions', values['rate-sessions'] ?? (q ? '10' : '200')),
    rateConcurrency: 20,
    forkConnections: positiveInt('fork-conns', values['fork-conns'] ?? (q ? '3' : '20')),
    cipher: values.cipher,
    kex: values.kex,
    scenarios: scenarios as ScenarioGroup[],
    json: values.json,
    quick: q,
    tsxAgent: values['tsx-agent'] === true,
    recording: values['no-recording'] !== true,
    aging: {
      size: values['aging-size'] !== undefined ? parseSize(values['aging-size']) : size,
      connections: positiveInt('aging-conns', values['aging-conns'] ?? (q ? '10' : '1000')),
      concurrency: positiveInt('aging-concurrency', values['aging-concurrency'] ?? '4'),
      loadConnections: positiveInt('load-conns', values['load-conns'] ?? (q ? '3' : '50')),
      loadSize: parseSize(values['load-size'] ?? (q ? '64K' : '32M')),
      loadWaitS: loadWait,
    },
    cores: {
      streams: positiveInt('cores-streams', values['cores-streams'] ?? (q ? '2' : '8')),
      size: parseSize(values['cores-size'] ?? (q ? '1M' : '256M')),
    },
    gatewayEnv: Object.fromEntries(
      (values['gateway-env'] ?? []).map((kv) => {
        const m = /^([A-Za-z_]\w*)=(.*)$/s.exec(kv);
        if (!m) throw new Error(`--gateway-env wants NAME=VALUE, got "${kv}"`);
        return [m[1] as string, m[2] as string];
      }),
    ),
    baseline: values.baseline,
    compare: values.compare,
  };
}
