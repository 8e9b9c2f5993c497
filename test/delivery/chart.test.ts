// The Helm chart, checked without helm (none on this machine): values documented, schema right, templates
// consistent with values.yaml, and the k8shell chart's facts (reference-behaviour.md §21) present.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Ajv } from 'ajv';
import YAML from 'yaml';
import { parseConfig } from '../../src/config/load.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const CHART = join(ROOT, 'deploy', 'helm', 'ssh-proxy');
const read = (...p: string[]): string => readFileSync(join(CHART, ...p), 'utf8');

type Tree = Record<string, unknown>;
const isMap = (v: unknown): v is Tree => v !== null && typeof v === 'object' && !Array.isArray(v);
const clone = <T>(v: T): T => structuredClone(v);

const values = YAML.parse(read('values.yaml')) as Tree;
const schema = JSON.parse(read('values.schema.json')) as object;
const templates = readdirSync(join(CHART, 'templates'))
  .filter((f) => /\.(yaml|tpl|txt)$/.test(f))
  .map((f) => ({ name: f, text: read('templates', f) }));

/** Leaf paths of values.yaml: scalars, lists and empty maps. */
function leafPaths(tree: Tree, prefix = ''): string[] {
  return Object.entries(tree).flatMap(([k, v]) => {
    const path = prefix ? `${prefix}.${k}` : k;
    return isMap(v) && Object.keys(v).length > 0 ? leafPaths(v, path) : [path];
  });
}

/** The value at a dotted path, or undefined when a segment is missing. */
function lookup(tree: Tree, path: string): { found: boolean; value?: unknown } {
  let cur: unknown = tree;
  for (const seg of path.split('.')) {
    if (!isMap(cur) || !(seg in cur)) return { found: false };
    cur = cur[seg];
  }
  return { found: true, value: cur };
}

function validator() {
  return new Ajv({ allErrors: true, strict: true }).compile(schema);
}

describe('Helm chart: values and their documentation', () => {
  // The rows of the README's "## Values" table.
  const section =
    read('README.md')
      .split(/^## /m)
      .find((s) => s.startsWith('Values\n')) ?? '';
  const documented = [...section.matchAll(/^\| `([A-Za-z0-9_.]+)` \|/gm)].map((m) => m[1] ?? '');

  test('every values.yaml key is documented in the README (itself or an enclosing key)', () => {
    const leaves = leafPaths(values);
    assert.ok(leaves.length > 80, `expected the full value tree, got ${leaves.length} keys`);
    const missing = leaves.filter((p) => !documented.some((d) => p === d || p.startsWith(`${d}.`)));
    assert.deepEqual(missing, [], 'keys without a README row');
  });

  test('every key documented in the README exists in values.yaml, once', () => {
    assert.deepEqual(
      documented.filter((d) => !lookup(values, d).found),
      [],
      'README rows naming keys values.yaml lacks',
    );
    assert.deepEqual(
      documented.filter((d, i) => documented.indexOf(d) !== i),
      [],
      'duplicate README rows',
    );
  });

  test('Chart appVersion follows package.json (the image tag make builds is v<version>)', () => {
    const chart = YAML.parse(read('Chart.yaml')) as { appVersion?: string; name?: string };
    const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string };
    assert.equal(chart.name, 'ssh-proxy');
    assert.equal(chart.appVersion, `v${pkg.version}`);
  });
});

describe('Helm chart: values.schema.json', () => {
  test('accepts the default values', () => {
    const validate = validator();
    assert.ok(validate(values), JSON.stringify(validate.errors, null, 2));
  });

  test('accepts a k8shell chart values file (its other sections are left alone)', () => {
    const v = clone(values);
    (v.identity as Tree).replicas = 1;
    (v.identity as Tree).image = { name: 'k8shell-base/identity', tag: 'v0.14.2' };
    v.frontend = { enabled: false };
    (v.nats as Tree).password = { secretName: 'nats', secretKey: 'password' };
    (v.sshProxy as Tree).serverKey = { secretName: 'my-host-key', secretKey: 'key' };
    const validate = validator();
    assert.ok(validate(v), JSON.stringify(validate.errors, null, 2));
  });

  const bad: [string, (v: Tree) => void, RegExp][] = [
    ['a string port', (v) => ((v.nats as Tree).port = '4222'), /must be integer/],
    ['a token lifetime below 600 s', (v) => (v.tokenExpiration = 60), /must be >= 600/],
    [
      'an unknown runtime',
      (v) => (((v.sshProxy as Tree).image as Tree).runtime = 'ubuntu'),
      /allowed values/,
    ],
    ['a misspelt sshProxy key', (v) => ((v.sshProxy as Tree).replica = 3), /additional properties/],
    ['an address without port', (v) => ((v.identity as Tree).address = 'identity'), /must match pattern/],
    [
      'a host-key Secret without its key',
      (v) => ((v.sshProxy as Tree).serverKey = { secretName: 'k' }),
      /must have property secretKey/,
    ],
    [
      'an unknown traffic policy',
      (v) => (((v.sshProxy as Tree).loadBalancer as Tree).externalTrafficPolicy = 'local'),
      /allowed values/,
    ],
    ['a log format the CLI lacks', (v) => ((v.sshProxy as Tree).logFormat = 'pretty'), /allowed values/],
  ];
  for (const [what, mutate, message] of bad) {
    test(`rejects ${what}`, () => {
      const v = clone(values);
      mutate(v);
      const validate = validator();
      assert.equal(validate(v), false);
      assert.match(JSON.stringify(validate.errors), message);
    });
  }
});

describe('Helm chart: templates', () => {
  test('every .Values path a template uses exists in values.yaml', () => {
    const problems: string[] = [];
    for (const { name, text } of templates) {
      // Aliases such as {{- $sp := .Values.sshProxy -}} are followed too.
      const aliases = new Map<string, string>();
      for (const m of text.matchAll(/\$(\w+)\s*:=\s*\.Values((?:\.\w+)+)/g))
        aliases.set(m[1] ?? '', m[2] ?? '');
      const refs: string[] = [...text.matchAll(/\.Values((?:\.\w+)+)/g)].map((m) => (m[1] ?? '').slice(1));
      for (const m of text.matchAll(/\$(\w+)((?:\.\w+)+)/g)) {
        const base = aliases.get(m[1] ?? '');
        if (base !== undefined) refs.push(`${base.slice(1)}${m[2] ?? ''}`);
      }
      for (const ref of refs) {
        // A reference may go below a documented free-form map ({} in values.yaml): its keys are the user's.
        const segs = ref.split('.');
        let ok = false;
        for (let i = segs.length; i > 0 && !ok; i--) {
          const at = lookup(values, segs.slice(0, i).join('.'));
          if (!at.found) continue;
          ok = i === segs.length || (isMap(at.value) && Object.keys(at.value).length === 0);
          break;
        }
        if (!ok) problems.push(`${name}: .Values.${ref}`);
      }
    }
    assert.deepEqual([...new Set(problems)], []);
  });

  test('every template block is closed and every action delimited', () => {
    for (const { name, text } of templates) {
      const actions = [...text.matchAll(/\{\{-?\s*(?:\/\*[\s\S]*?\*\/\s*-?\}\}|([\s\S]*?)-?\}\})/g)];
      let depth = 0;
      for (const a of actions) {
        const body = (a[1] ?? '').trim();
        if (/^(if|range|with|define|block)\b/.test(body)) depth++;
        else if (/^end\b/.test(body)) depth--;
        assert.ok(depth >= 0, `${name}: {{ end }} without an open block`);
      }
      assert.equal(depth, 0, `${name}: ${depth} block(s) left open`);
      const opens = text.split('{{').length - 1;
      const closes = text.split('}}').length - 1;
      assert.equal(opens, closes, `${name}: {{ and }} do not pair`);
    }
  });

  test("renders the k8shell chart's objects, names, mounts and ports (reference-behaviour.md §21)", () => {
    const all = templates.map((t) => t.text).join('\n');
    const dep = templates.find((t) => t.name === 'deployment.yaml')?.text ?? '';
    for (const name of ['ssh-proxy-config', 'int-ssh-proxy', 'ssh-internal', 'ssh-external', 'ssh-nodeport'])
      assert.ok(all.includes(`name: ${name}`), name);
    assert.match(all, /kind: ServiceAccount\s+metadata:\s+name: ssh-proxy/);
    assert.match(dep, /k8shell\.io\/app: ssh-proxy|ssh-proxy\.selectorLabels/);
    assert.match(dep, /mountPath: \/app\/config/);
    assert.match(dep, /mountPath: \/app\/secrets/);
    assert.match(dep, /path: server_key/);
    assert.match(dep, /mountPath: \/var\/run\/secrets\/k8shell\.io/);
    assert.match(dep, /mountPath: \/etc\/k8shell\/ca/);
    assert.match(dep, /containerPort: 2022/);
    assert.match(dep, /list "session" "identity" "provisioner" "k8shelld" "authz"/);
    assert.match(dep, /audience: \{\{ \$audience \}\}/);
    assert.match(dep, /expirationSeconds: \{\{ \$\.Values\.tokenExpiration \}\}/);
    assert.match(dep, /terminationGracePeriodSeconds: \{\{ include "ssh-proxy\.gracePeriod"/);
    assert.match(all, /genPrivateKey "ecdsa"/);
    assert.match(all, /port: 22\s+targetPort: ssh/);
    assert.match(all, /nodePort: \{\{ \$sp\.nodePort\.port \}\}/);
    assert.equal(lookup(values, 'sshProxy.nodePort.port').value, 30022);
    assert.equal(lookup(values, 'tokenExpiration').value, 600);
    const cm = templates.find((t) => t.name === 'configmap.yaml')?.text ?? '';
    for (const key of ['"serverKey" "/app/secrets/server_key"', '"port" 2022', '${NATS_K8SHELL_PASSWORD}'])
      assert.ok(cm.includes(key), key);
  });
});

/**
 * What templates/configmap.yaml renders, mirrored in TypeScript (no helm here to render it), so the gateway's
 * own loader can check it. The test below keeps the mirror honest: every key the template writes must be
 * in it.
 */
function renderedConfig(v: Tree, namespace: string): Tree {
  const get = (path: string): unknown => lookup(v, path).value;
  const certManager = get('certManager.enabled') === true;
  const client = (name: string, address: string): Tree => {
    const host = address.split(':')[0] ?? address;
    return {
      address,
      tokenFilePath: `/var/run/secrets/k8shell.io/${name}`,
      ...(certManager
        ? {
            caCertPath: '/etc/k8shell/ca/ca.crt',
            serverName: host.includes('.') ? host : `${host}.${namespace}.svc`,
          }
        : {}),
    };
  };
  const store =
    get('session.enabled') === true && get('session.recording.persistentVolumeClaim.install') === true;
  const config: Tree = {
    server: {
      port: 2022,
      serverKey: '/app/secrets/server_key',
      forking: get('sshProxy.forking'),
      proxyProtocol: get('sshProxy.proxyProtocol'),
      drainTimeout: get('sshProxy.drainTimeout'),
      writerOptions: get('sshProxy.writerOptions'),
      publishSshFailures: get('sshProxy.publishSshFailures'),
      recording: {
        recordShell: get('sshProxy.recording.recordShell') === true && store,
        recordExec: get('sshProxy.recording.recordExec') === true && store,
        recordDirectTCPIP: get('sshProxy.recording.recordDirectTCPIP') === true && store,
      },
    },
    nats: {
      enabled: get('nats.enabled'),
      url: `nats://${String(get('nats.host'))}:${String(get('nats.port'))}`,
      username: get('nats.username'),
      password: '${NATS_K8SHELL_PASSWORD}',
    },
    identity: client('identity', String(get('identity.address'))),
    provisioner: client('provisioner', String(get('provisioner.address'))),
    k8shelld: { tokenFilePath: '/var/run/secrets/k8shell.io/k8shelld' },
    metrics: { address: `0.0.0.0:${String(get('sshProxy.metrics.port'))}` },
  };
  if (get('session.enabled') === true) config.session = client('session', String(get('session.address')));
  if (get('authz.enabled') === true) config.authz = client('authz', String(get('authz.address')));
  const grpcPort = Number(get('sshProxy.grpc.port'));
  if (grpcPort > 0)
    config.grpc = {
      port: grpcPort,
      ...(certManager
        ? { enableTLS: true, certFile: '/etc/ssh-proxy/tls/tls.crt', keyFile: '/etc/ssh-proxy/tls/tls.key' }
        : {}),
    };
  const merge = (dst: Tree, src: Tree): Tree => {
    for (const [k, x] of Object.entries(src)) dst[k] = isMap(x) && isMap(dst[k]) ? merge(dst[k], x) : x;
    return dst;
  };
  return merge(config, clone((get('sshProxy.extraConfig') ?? {}) as Tree));
}

function keysOf(tree: Tree): Set<string> {
  const keys = new Set<string>();
  const walk = (t: Tree) => {
    for (const [k, x] of Object.entries(t)) {
      keys.add(k);
      if (isMap(x)) walk(x);
    }
  };
  walk(tree);
  return keys;
}

describe('Helm chart: the config.yaml it renders', () => {
  const everything = (): Tree => {
    const v = clone(values);
    Object.assign(v.certManager as Tree, { enabled: true });
    Object.assign(v.session as Tree, {
      enabled: true,
      recording: { persistentVolumeClaim: { install: true } },
    });
    Object.assign(v.authz as Tree, { enabled: true });
    Object.assign(v.nats as Tree, { enabled: true });
    const sp = v.sshProxy as Tree;
    Object.assign(sp, { forking: true, proxyProtocol: true, grpc: { port: 9050 } });
    Object.assign(sp.recording as Tree, { recordShell: true, recordExec: true, recordDirectTCPIP: true });
    (v.identity as Tree).address = 'identity.other-ns.svc:9020';
    sp.extraConfig = { server: { maxStartups: 200, proxyProtocolTrustedCIDRs: ['10.0.0.0/8'] } };
    return v;
  };

  test('writes only keys of the mirror above (templates/configmap.yaml and the client helper)', () => {
    const source = read('templates', 'configmap.yaml') + read('templates', '_helpers.tpl');
    const start = source.indexOf('define "ssh-proxy.client"');
    const written = new Set(
      [
        ...(source.slice(0, source.indexOf('{{- define')) + source.slice(start)).matchAll(
          /"([a-zA-Z][a-zA-Z0-9]*)"/g,
        ),
      ].map((m) => m[1] ?? ''),
    );
    written.delete('ecdsa');
    const mirrored = keysOf(renderedConfig(everything(), 'k8shell'));
    assert.ok(written.size > 20, [...written].join());
    assert.deepEqual(
      [...written].filter((k) => !mirrored.has(k)),
      [],
    );
  });

  for (const [what, make] of [
    ['default values', () => clone(values)],
    ['every option on', everything],
  ] as [string, () => Tree][]) {
    test(`with ${what}, the gateway's loader accepts it without a warning`, () => {
      const text = YAML.stringify(renderedConfig(make(), 'k8shell'));
      const { config, warnings } = parseConfig(text, {
        file: 'ssh-proxy-config',
        env: { NATS_K8SHELL_PASSWORD: '' },
      });
      assert.deepEqual(warnings, []);
      assert.equal(config.server.port, 2022);
      assert.equal(config.metrics.address, '0.0.0.0:9090');
      assert.equal(config.k8shelld.tokenFilePath, '/var/run/secrets/k8shell.io/k8shelld');
    });
  }

  test('with cert-manager, clients get the cluster CA and <service>.<namespace>.svc server names', () => {
    const c = renderedConfig(everything(), 'k8shell');
    assert.deepEqual(c.provisioner, {
      address: 'provisioner:9030',
      tokenFilePath: '/var/run/secrets/k8shell.io/provisioner',
      caCertPath: '/etc/k8shell/ca/ca.crt',
      serverName: 'provisioner.k8shell.svc',
    });
    assert.equal((c.identity as Tree).serverName, 'identity.other-ns.svc');
    const cm = read('templates', 'configmap.yaml');
    assert.match(
      cm,
      /and \.Values\.session\.enabled \.Values\.session\.recording\.persistentVolumeClaim\.install/,
    );
  });
});
