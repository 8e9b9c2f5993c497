import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DEFAULT_CONFIG_PATH, loadConfig, parseConfig, type Config } from '../../src/config/load.js';
import { ProxyError } from '../../src/common/errors.js';

const FILE = '/etc/ssh-proxy/test.yaml';

function parse(yaml: string, env: NodeJS.ProcessEnv = {}): { config: Config; warnings: string[] } {
  return parseConfig(yaml, { file: FILE, env });
}

function failure(yaml: string, env: NodeJS.ProcessEnv = {}, file = FILE): ProxyError {
  try {
    parseConfig(yaml, { file, env });
  } catch (err) {
    assert.ok(err instanceof ProxyError, `expected a ProxyError, got ${String(err)}`);
    assert.equal(err.code, 'bad_config');
    return err;
  }
  assert.fail('expected the configuration to be rejected');
}

const MIN = 'server:\n  port: 2022\n';

describe('config loader: substitution', () => {
  it('substitutes ${VAR} in values, inside strings and in keys', () => {
    const { config, warnings } = parse(
      'server:\n  ${PORT_KEY}: 2022\n  sftpBinary: ${BIN}\nnats:\n  url: nats://${H}:4222\n  username: ${U}-${U}\n',
      { PORT_KEY: 'port', BIN: '/opt/sftp', H: 'nats.example', U: 'me' },
    );
    assert.equal(config.server.port, 2022);
    assert.equal(config.server.sftpBinary, '/opt/sftp');
    assert.equal(config.nats.url, 'nats://nats.example:4222');
    assert.equal(config.nats.username, 'me-me');
    assert.deepEqual(warnings, []);
  });

  it('coerces substituted numbers and booleans', () => {
    const { config } = parse(
      'server:\n  port: ${P}\n  forking: ${F}\n  SSHHandshakeTimeout: ${T}\n  proxyProtocol: "yes"\ngrpc:\n  port: "9050"\n',
      { P: '2200', F: 'true', T: '7' },
    );
    assert.equal(config.server.port, 2200);
    assert.equal(config.server.forking, true);
    assert.equal(config.server.SSHHandshakeTimeout, 7);
    assert.equal(config.server.proxyProtocol, true);
    assert.equal(config.grpc.port, 9050);
  });

  it('fails on an unset variable, naming it and the file', () => {
    const err = failure('server:\n  port: ${MISSING_PORT}\n');
    assert.equal(
      err.message,
      `failed to load configuration from '${FILE}': environment variable 'MISSING_PORT' not set`,
    );
  });

  it('fails on an unset variable used in a key', () => {
    const err = failure('server:\n  ${NOKEY}: 1\n');
    assert.match(err.message, /environment variable 'NOKEY' not set/);
  });

  it('keeps an environment value with YAML syntax a plain string', () => {
    const evil = 'a: b\n- c\n{x: [1]}';
    const { config, warnings } = parse(`${MIN}  sftpBinary: \${EVIL}\nnats:\n  password: \${EVIL}\n`, {
      EVIL: evil,
    });
    assert.equal(config.server.sftpBinary, evil);
    assert.equal(config.nats.password, evil);
    assert.deepEqual(warnings, []);
  });

  it('keeps the source text of numeric literals in string keys', () => {
    const { config } = parse(`${MIN}nats:\n  token: 0123\n  username: 1e3\n`);
    assert.equal(config.nats.token, '0123');
    assert.equal(config.nats.username, '1e3');
  });
});

describe('config loader: !file', () => {
  let dir = '';
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'ssh-proxy-config-'));
    await mkdir(join(dir, 'secrets'));
    await writeFile(join(dir, 'secrets', 'token'), '\n  s3cret-value  \n\n');
    await writeFile(join(dir, 'secrets', 'looks-like-var'), '${NOT_A_VAR}');
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('reads a path relative to the config file, trimmed, after substitution', () => {
    const { config } = parseConfig(
      `${MIN}nats:\n  password: !file \${SUB}/token\n  token: !file secrets/token\n`,
      {
        file: join(dir, 'config.yaml'),
        env: { SUB: 'secrets' },
      },
    );
    assert.equal(config.nats.password, 's3cret-value');
    assert.equal(config.nats.token, 's3cret-value');
  });

  it('reads an absolute path', () => {
    const { config } = parseConfig(`${MIN}nats:\n  password: !file ${join(dir, 'secrets', 'token')}\n`, {
      file: '/nowhere/config.yaml',
      env: {},
    });
    assert.equal(config.nats.password, 's3cret-value');
  });

  it('does not substitute inside file content', () => {
    const { config } = parseConfig(`${MIN}nats:\n  password: !file secrets/looks-like-var\n`, {
      file: join(dir, 'config.yaml'),
      env: {},
    });
    assert.equal(config.nats.password, '${NOT_A_VAR}');
  });

  it('fails on an unreadable file, naming it', () => {
    const file = join(dir, 'config.yaml');
    const err = failure(`${MIN}nats:\n  password: !file secrets/absent\n`, {}, file);
    assert.ok(
      err.message.startsWith(
        `failed to load configuration from '${file}': read !file '${join(dir, 'secrets', 'absent')}': `,
      ),
      err.message,
    );
    assert.match(err.message, /ENOENT/);
  });

  it('fails on an unset variable in the !file path', () => {
    const err = failure(`${MIN}nats:\n  password: !file \${NO_SECRETS}/x\n`, {}, join(dir, 'config.yaml'));
    assert.match(err.message, /environment variable 'NO_SECRETS' not set/);
  });

  it('rejects an unknown tag instead of using its text', () => {
    const err = failure(`${MIN}nats:\n  password: !fiel secrets/token\n`);
    assert.match(err.message, /Unresolved tag: !fiel/);
  });
});

describe('config loader: structure errors', () => {
  it('rejects empty content', () => {
    assert.equal(failure('').message, `failed to load configuration from '${FILE}': YAML content is empty`);
    assert.match(failure('# only a comment\n').message, /YAML content is empty$/);
  });

  it('reports YAML syntax errors with a position', () => {
    assert.match(failure('server:\n  port: [1,\n').message, /line \d+, column \d+/);
  });

  it('rejects duplicate keys', () => {
    assert.match(failure('server:\n  port: 1\n  port: 2\n').message, /unique|duplicate/i);
    assert.match(failure('server:\n  port: 1\n  ${K}: 2\n', { K: 'port' }).message, /duplicate key 'port'/);
  });

  it('names the key path and the expected type', () => {
    assert.equal(
      failure('server:\n  port: abc\n').message,
      `failed to load configuration from '${FILE}': server.port: expected a number, got "abc"`,
    );
    assert.match(failure('server:\n  port: 1.5\n').message, /server\.port: expected an integer, got 1\.5/);
    assert.match(
      failure('server:\n  port: 70000\n').message,
      /server\.port: must be at most 65535, got 70000/,
    );
    assert.match(
      failure(`${MIN}  forking: maybe\n`).message,
      /server\.forking: expected a boolean \(true or false\), got "maybe"/,
    );
    assert.match(failure('server: 5\n').message, /server: expected a mapping, got 5/);
    assert.match(failure('- a\n').message, /expected a mapping at the top level, got a list/);
    assert.match(
      failure(`${MIN}grpc:\n  allowed:\n    - namespace: [x]\n`).message,
      /grpc\.allowed\[0\]\.namespace: expected a string, got a list/,
    );
  });

  it('reports every offending key at once', () => {
    const msg = failure('server:\n  port: x\n  maxAuthTries: 0\n').message;
    assert.match(msg, /server\.port: expected a number/);
    assert.match(msg, /server\.maxAuthTries: must be at least 1, got 0/);
  });

  it('requires a port', () => {
    assert.equal(
      failure('server:\n  forking: false\n').message,
      'missing required configuration values: port must be set',
    );
    assert.equal(
      failure('server:\n  port:\n').message,
      'missing required configuration values: port must be set',
    );
    assert.equal(
      failure('grpc:\n  port: 1\n').message,
      'missing required configuration values: port must be set',
    );
  });

  it('validates ciphers and trusted CIDRs', () => {
    assert.match(
      failure(`${MIN}  ciphers: [aes128-ctr, rc4]\n`).message,
      /server\.ciphers\[1\]: unknown cipher "rc4"/,
    );
    assert.match(failure(`${MIN}  ciphers: []\n`).message, /server\.ciphers: must not be empty/);
    assert.match(
      failure(`${MIN}  proxyProtocolTrustedCIDRs: [10.0.0.0/8, 10.0.0.0/33]\n`).message,
      /server\.proxyProtocolTrustedCIDRs\[1\]: invalid CIDR "10\.0\.0\.0\/33"/,
    );
    const { config } = parse(
      `${MIN}  proxyProtocolTrustedCIDRs: [10.0.0.0/8, "::1", fd00::/8]\n  ciphers: aes256-ctr\n`,
    );
    assert.deepEqual(config.server.proxyProtocolTrustedCIDRs, ['10.0.0.0/8', '::1', 'fd00::/8']);
    assert.deepEqual(config.server.ciphers, ['aes256-ctr']);
  });

  it('accepts durations as seconds or Go duration strings', () => {
    const { config } = parse(
      `${MIN}  drainTimeout: 1m30s\n  keepaliveInterval: 0.5\nnats:\n  reconnectWait: 500ms\n`,
    );
    assert.equal(config.server.drainTimeout, 90);
    assert.equal(config.server.keepaliveInterval, 0.5);
    assert.equal(config.nats.reconnectWait, 0.5);
    assert.match(
      failure(`${MIN}  drainTimeout: soon\n`).message,
      /server\.drainTimeout: expected seconds or a duration like "2s", got "soon"/,
    );
  });
});

describe('config loader: unknown keys', () => {
  it('returns a warning per unknown key and still loads', () => {
    const { config, warnings } = parse(
      'server:\n  port: 2022\n  prot: 1\n  recording:\n    shell: {formt: x}\ngrpc:\n  allowed:\n    - {namespace: a, sa: b}\nextra: {a: 1}\n',
    );
    assert.equal(config.server.port, 2022);
    assert.deepEqual(warnings, [
      "unknown key 'server.prot' (ignored)",
      "unknown key 'server.recording.shell.formt' (ignored)",
      "unknown key 'grpc.allowed[0].sa' (ignored)",
      "unknown key 'extra' (ignored)",
    ]);
    assert.deepEqual(config.grpc.allowed, [{ namespace: 'a', serviceAccount: '' }]);
  });

  it('treats __proto__ as an ordinary unknown key', () => {
    const { config, warnings } = parse(`${MIN}__proto__: {polluted: true}\n`);
    assert.deepEqual(warnings, ["unknown key '__proto__' (ignored)"]);
    assert.equal(({} as Record<string, unknown>).polluted, undefined);
    assert.equal(config.server.port, 2022);
  });
});

describe('config loader: defaults', () => {
  it('fills the reference defaults and ours', () => {
    const { config } = parse(MIN);
    const s = config.server;
    assert.equal(s.SSHHandshakeTimeout, 30);
    assert.equal(s.maxDirectTCPIPConnections, 15);
    assert.equal(s.sftpBinary, '/usr/local/bin/sftp');
    assert.equal(s.recording.bufferBytes, 8 * 1024 * 1024);
    assert.deepEqual(s.serverKey, []);
    assert.equal(s.forking, false);
    assert.equal(s.writerOptions.showPulse, false);
    assert.equal(s.bindAddress, '');
    assert.equal(s.maxAuthTries, 6);
    assert.equal(s.keepaliveInterval, 15);
    assert.equal(s.keepaliveCountMax, 3);
    assert.deepEqual(s.ciphers, [
      'aes128-gcm@openssh.com',
      'aes256-gcm@openssh.com',
      'chacha20-poly1305@openssh.com',
      'aes128-ctr',
      'aes192-ctr',
      'aes256-ctr',
    ]);
    assert.equal(s.proxyProtocolTimeout, 5);
    assert.deepEqual(s.proxyProtocolTrustedCIDRs, []);
    assert.equal(s.maxStartups, 100);
    assert.equal(s.drainTimeout, 30);
    assert.equal(s.recording.directTCPIP.vscode, undefined);
    assert.equal(s.recording.shell.gzip, undefined);
    assert.equal(config.grpc.issuerURL, 'https://kubernetes.default.svc.cluster.local');
    assert.equal(config.nats.maxReconnects, -1);
    assert.equal(config.nats.reconnectWait, 2);
    assert.equal(config.k8shelld.caCertPath, '/etc/k8shell/ca/ca.crt');
    assert.equal(config.k8shelld.handshakeTimeout, 5);
    assert.equal(config.provisioner.timeout, 120);
    assert.equal(config.metrics.address, '');
    assert.deepEqual(config.identity, { address: '', serverName: '', tokenFilePath: '', caCertPath: '' });
  });

  it('treats 0 as "use the default" where the reference does', () => {
    const { config } = parse(
      `${MIN}  SSHHandshakeTimeout: 0\n  maxDirectTCPIPConnections: 0\n  sftpBinary: ""\n  recording: {bufferBytes: 0}\n`,
    );
    assert.equal(config.server.SSHHandshakeTimeout, 30);
    assert.equal(config.server.maxDirectTCPIPConnections, 15);
    assert.equal(config.server.sftpBinary, '/usr/local/bin/sftp');
    assert.equal(config.server.recording.bufferBytes, 8 * 1024 * 1024);
  });

  it('accepts serverKey as one path or a list', () => {
    assert.deepEqual(parse(`${MIN}  serverKey: /k/ed25519\n`).config.server.serverKey, ['/k/ed25519']);
    assert.deepEqual(parse(`${MIN}  serverKey: [/k/ed25519, /k/rsa]\n`).config.server.serverKey, [
      '/k/ed25519',
      '/k/rsa',
    ]);
  });

  it('turns VS Code terminal options on when a session service is configured, unless set', () => {
    const on = parse(`${MIN}session:\n  address: session:9010\n`).config;
    assert.deepEqual(on.server.recording.directTCPIP.vscode, { terminals: true, recordInput: true });
    const explicit = parse(
      `${MIN}  recording:\n    directTCPIP:\n      vscode: {recordInput: false}\nsession:\n  address: s:1\n`,
    ).config;
    assert.deepEqual(explicit.server.recording.directTCPIP.vscode, { terminals: true, recordInput: false });
    const off = parse(MIN).config;
    assert.equal(off.server.recording.directTCPIP.vscode, undefined);
  });
});

describe('config loader: recording validation (§2.3)', () => {
  const rec = (body: string, tail = ''): string => `${MIN}  recording:\n${body}${tail}`;

  it('rejects an unknown format', () => {
    assert.equal(
      failure(rec('    exec: {format: mp4}\n')).message,
      'invalid server configuration: recording.exec.format: unknown format "mp4" (want asciinema, pcapng or none)',
    );
  });

  it('rejects vscode options on streams other than directTCPIP', () => {
    for (const stream of ['shell', 'exec', 'sftp']) {
      assert.equal(
        failure(rec(`    ${stream}: {vscode: {terminals: true}}\n`)).message,
        `invalid server configuration: recording.${stream}.vscode: VS Code options are only valid for directTCPIP`,
      );
    }
  });

  it('allows none only on directTCPIP with VS Code terminals', () => {
    for (const stream of ['shell', 'exec', 'sftp']) {
      assert.equal(
        failure(rec(`    ${stream}: {format: none}\n`)).message,
        `invalid server configuration: recording.${stream}.format: none is only valid for directTCPIP with vscode.terminals enabled`,
      );
    }
    const none =
      'invalid server configuration: recording.directTCPIP.format: none is only valid for directTCPIP with vscode.terminals enabled';
    assert.equal(failure(rec('    directTCPIP: {format: none}\n')).message, none);
    assert.equal(failure(rec('    directTCPIP: {format: none, vscode: {terminals: false}}\n')).message, none);
    const ok = parse(rec('    directTCPIP: {format: none, vscode: {terminals: true}}\n')).config;
    assert.equal(ok.server.recording.directTCPIP.format, 'none');
    // The session-address default is applied first, so `none` may rely on it.
    const viaDefault = parse(rec('    directTCPIP: {format: none}\n', 'session:\n  address: s:1\n')).config;
    assert.equal(viaDefault.server.recording.directTCPIP.vscode?.terminals, true);
  });

  it('accepts pcapng with VS Code terminals and keeps per-stream options', () => {
    const { config } = parse(
      rec(
        '    shell: {format: asciinema, gzip: true}\n    directTCPIP: {format: pcapng, vscode: {terminals: true}}\n',
      ),
    );
    assert.deepEqual(config.server.recording.shell, { format: 'asciinema', gzip: true });
    assert.equal(config.server.recording.directTCPIP.format, 'pcapng');
  });

  it('rejects a negative bufferBytes', () => {
    assert.equal(
      failure(rec('    bufferBytes: -1\n')).message,
      'invalid server configuration: recording.bufferBytes must not be negative',
    );
  });
});

describe('loadConfig', () => {
  let dir = '';
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'ssh-proxy-load-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('exports the default path', () => {
    assert.equal(DEFAULT_CONFIG_PATH, 'config/config.yaml');
  });

  it('loads a file', async () => {
    const file = join(dir, 'ok.yaml');
    await writeFile(file, 'server:\n  port: ${P}\n');
    const { config } = await loadConfig(file, { P: '2300' });
    assert.equal(config.server.port, 2300);
  });

  it('fails on a missing or unreadable file, naming it', async () => {
    const missing = join(dir, 'missing.yaml');
    await assert.rejects(loadConfig(missing, {}), (err: unknown) => {
      assert.ok(err instanceof ProxyError);
      assert.equal(err.code, 'bad_config');
      assert.match(err.message, new RegExp(`^failed to load configuration from '${missing}': .*ENOENT`));
      return true;
    });
    const unreadable = join(dir, 'dir.yaml');
    // A directory: unreadable as a file even for root (permission bits do not stop root).
    await mkdir(unreadable);
    await assert.rejects(
      loadConfig(unreadable, {}),
      /failed to load configuration from '.*dir\.yaml': .*EISDIR/,
    );
  });
});
