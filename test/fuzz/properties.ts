// The fuzz suite's properties: every parser that sees outside input (docs/security.md, "fuzz"). Each
// property runs fc.assert, so the runner controls runs, seed and path through fc.configureGlobal and
// can replay a recorded failure exactly. `weight` shares the full run's case budget.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { ProxyError } from '../../src/common/errors.js';
import { canonicalUserStr, parseUserStr, UserStrError } from '../../src/gateway/userstr.js';
import { asUserProblem } from '../../src/gateway/as-user.js';
import { isPortableUserName, runAsProblem } from '../../src/common/user-names.js';
import { resolveDialPath } from '../../src/agent/socket-path.js';
import { decodeBytesField, encodeBytesField } from '../../src/common/k8shelld-wire.js';
import { parseYaml, substituteEnv, YamlLoadError } from '../../src/config/yaml.js';
import { parseConfig } from '../../src/config/load.js';
import {
  evaluatePolicy,
  globToRegExp,
  parsePolicy,
  type PolicyRequest,
} from '../../src/local/policy-rules.js';
import { decodeChannelOpen, decodeChannelRequest } from '../../src/gateway/ssh2-shims/payloadParser.js';
import { clampSize, streamLocalPath, tcpipPayload } from '../../src/gateway/request-payloads.js';
import { envAccepted } from '../../src/gateway/env-policy.js';
import { DEFAULT_ACCEPT_ENV } from '../../src/config/schema.js';
import { proxyProperties } from '../gateway-lib/proxy-protocol.props.js';

export interface FuzzProperty {
  name: string;
  /** Share of the full run's cases (relative). */
  weight: number;
  run(numRuns: number): void | Promise<void>;
}

const bytes = (max: number) => fc.uint8Array({ maxLength: max }).map((a) => Buffer.from(a));
const text = fc.string({ unit: 'binary', maxLength: 160 });

// --- SSH wire helpers (RFC 4251 encodings) -------------------------------------------------------
const u32 = (n: number) => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n >>> 0);
  return b;
};
const sshString = (s: Buffer | string) => {
  const b = typeof s === 'string' ? Buffer.from(s, 'utf8') : s;
  return Buffer.concat([u32(b.length), b]);
};
/** A field that is usually well formed and sometimes truncated or oversized. */
const maybeBroken = (good: fc.Arbitrary<Buffer>) =>
  fc.oneof(
    { weight: 6, arbitrary: good },
    {
      weight: 1,
      arbitrary: fc.tuple(good, fc.nat(64)).map(([b, n]) => b.subarray(0, Math.max(0, b.length - n))),
    },
    {
      weight: 1,
      arbitrary: fc
        .tuple(fc.integer({ min: 0, max: 0xffffffff }), bytes(16))
        .map(([n, t]) => Buffer.concat([u32(n), t])),
    },
  );

const requestPayload = (type: string, body: fc.Arbitrary<Buffer>) =>
  fc
    .tuple(fc.nat(), fc.boolean(), body, bytes(8))
    .map(([rcpt, want, b, tail]) =>
      Buffer.concat([u32(rcpt), sshString(type), Buffer.from([want ? 1 : 0]), b, tail]),
    );

const envBody = fc
  .tuple(fc.oneof(fc.constantFrom(...DEFAULT_ACCEPT_ENV, 'LC_ALL', 'PATH', 'LD_PRELOAD'), text), bytes(300))
  .map(([n, v]) => Buffer.concat([sshString(n), sshString(v)]));
const ptyBody = fc
  .tuple(text, fc.array(fc.integer({ min: 0, max: 0xffffffff }), { minLength: 4, maxLength: 4 }), bytes(64))
  .map(([term, dims, modes]) => Buffer.concat([sshString(term), ...dims.map(u32), sshString(modes)]));
const winBody = fc
  .array(fc.integer({ min: 0, max: 0xffffffff }), { minLength: 0, maxLength: 4 })
  .map((d) => Buffer.concat(d.map(u32)));

const openPayload = (type: string, body: fc.Arbitrary<Buffer>) =>
  fc
    .tuple(fc.nat(), fc.integer({ min: 0, max: 0xffffffff }), fc.integer({ min: 0, max: 0xffffffff }), body)
    .map(([s, w, p, b]) => Buffer.concat([sshString(type), u32(s), u32(w), u32(p), b]));
const tcpipBody = fc
  .tuple(text, fc.integer({ min: 0, max: 0xffffffff }), text, fc.integer({ min: 0, max: 0xffffffff }))
  .map(([h, p, o, op]) => Buffer.concat([sshString(h), u32(p), sshString(o), u32(op)]));
const streamLocalBody = fc
  .tuple(
    fc.oneof(text, fc.constantFrom('../../etc/x.sock', '/run/docker.sock', '', 'a/../../b')),
    text,
    fc.nat(),
  )
  .map(([p, r, n]) => Buffer.concat([sshString(p), sshString(r), u32(n)]));

// --- user strings ----------------------------------------------------------------------------------
const segment = fc.oneof(
  fc.stringMatching(/^[a-zA-Z0-9._-]{0,12}$/),
  fc.constantFrom('root', 'root%20', '%2e%2e', 'a%2Fb', 'user=root', '=', '', '%', '%zz'),
  text,
);
const userstrLike = fc.oneof(
  text,
  fc
    .tuple(
      fc.stringMatching(/^[a-zA-Z0-9._-]{0,10}$/),
      fc.array(
        fc.tuple(fc.constantFrom('', 'user', 'ns', 'workload', 'repo', 'ref', 'pod', 'USER', 'x'), segment),
        { maxLength: 5 },
      ),
      fc.boolean(),
    )
    .map(
      ([u, kv, bp]) =>
        `${u}~${[bp ? 'dev' : undefined, ...kv.map(([k, v]) => (k ? `${k}=${v}` : v))].filter((x) => x !== undefined).join('+')}`,
    ),
  fc.string({ maxLength: 90 }).map((s) => `b64-${Buffer.from(s).toString('base64url')}`),
);

// --- policy files --------------------------------------------------------------------------------
const policyRule = fc.record(
  {
    action: fc.oneof(fc.constantFrom('ssh:*', 'ssh:shell', 'user:auth', 'workspace:create', '*'), text),
    user: fc.array(fc.oneof(fc.constantFrom('alice', '*', 'b?b', '[x'), text), { maxLength: 3 }),
    port: fc.array(
      fc.oneof(fc.integer({ min: -5, max: 70000 }), fc.constantFrom('22', '1-1024', '9-3', 'x', '80-')),
      { maxLength: 3 },
    ),
    pty: fc.boolean(),
    effect: fc.constantFrom('allow', 'deny', 'maybe'),
    reason: text,
  },
  { requiredKeys: ['effect'] },
);
const policyText = fc.oneof(
  fc
    .tuple(fc.array(policyRule, { maxLength: 5 }), fc.constantFrom('allow', 'deny', 'other'))
    .map(([rules, d]) => JSON.stringify({ default: d, rules })),
  fc.string({ maxLength: 300 }),
  fc.constantFrom('rules: [', 'rules: *a', 'a: &a [*a]', 'rules:\n  - effect: allow\n    port: [1-2-3]'),
);
const policyRequest: fc.Arbitrary<PolicyRequest> = fc.record({
  action: fc.constantFrom('ssh:shell', 'ssh:exec', 'ssh:direct-tcpip', 'user:auth', 'workspace:create'),
  resource: fc.option(
    fc.record({
      type: fc.constantFrom('user', 'workspace'),
      id: text,
      attributes: fc.dictionary(fc.constantFrom('owner', 'blueprint'), text),
    }),
    { nil: undefined },
  ),
  context: fc.dictionary(fc.constantFrom('port', 'host', 'pty', 'command', 'as_user'), text),
});

// --- config --------------------------------------------------------------------------------------
const varName = fc.stringMatching(/^[A-Z_][A-Z0-9_]{0,8}$/);
const configText = fc.oneof(
  fc
    .tuple(
      varName,
      fc.string({ maxLength: 40 }),
      fc.constantFrom('port', 'bindAddress', 'sftpBinary', 'maxSessions'),
    )
    .map(([v, _val, key]) => `server:\n  ${key}: \${${v}}\n  serverKey: /k\n`),
  fc
    .tuple(fc.string({ maxLength: 40 }))
    .map(([p]) => `server:\n  port: 2022\n  serverKey: !file ${JSON.stringify(p)}\n`),
  fc.string({ maxLength: 200 }),
  fc.constantFrom('a: &a [*a, *a]', 'server: !fiel x', '---\n---\n', 'server:\n  port: 1e9999', '${'),
);

function isExpectedConfigError(e: unknown): boolean {
  return e instanceof YamlLoadError || (e instanceof ProxyError && e.code === 'bad_config');
}

export const FUZZ_PROPERTIES: FuzzProperty[] = [
  {
    name: 'userstr: parse never throws anything but UserStrError; results are canonical and re-parse equal',
    weight: 3,
    run: (numRuns) =>
      fc.assert(
        fc.property(userstrLike, (s) => {
          let u;
          try {
            u = parseUserStr(s);
          } catch (e) {
            assert.ok(e instanceof UserStrError, `unexpected ${String(e)}`);
            return;
          }
          assert.ok(u.username.length > 0);
          assert.equal(u.username, u.username.toLowerCase());
          const c = canonicalUserStr(u);
          let again;
          try {
            again = parseUserStr(c);
          } catch {
            return; // canonical forms longer than the 128-rune limit cannot be parsed again
          }
          assert.equal(canonicalUserStr(again), c);
          assert.equal(again.asUser, u.asUser);
        }),
        { numRuns },
      ),
  },
  {
    name: 'as-user: without sudo only "" or the user itself passes, and no odd spelling ever does',
    weight: 2,
    run: (numRuns) =>
      fc.assert(
        fc.property(
          fc.stringMatching(/^[a-z][a-z0-9]{0,8}$/),
          fc.oneof(segment, fc.constantFrom('root', ' root', 'root ')),
          fc.boolean(),
          (self, as, sudo) => {
            const p = asUserProblem(self, as, sudo);
            const q = runAsProblem(self, as, sudo);
            assert.equal(p === undefined, q === undefined);
            if (p === undefined && as !== '') {
              assert.ok(isPortableUserName(as));
              assert.ok(!/[\s%\\/]/.test(as));
              if (!sudo) assert.equal(as, self);
            }
          },
        ),
        { numRuns },
      ),
  },
  {
    name: 'streamlocal: a relative socket path never resolves outside the workspace home',
    weight: 1,
    run: (numRuns) =>
      fc.assert(
        fc.property(
          fc.array(
            fc.oneof(fc.constantFrom('..', '.', '', 'a', '..a', 'sock'), fc.stringMatching(/^[^/\0]{0,6}$/)),
            { maxLength: 8 },
          ),
          (parts) => {
            const home = '/ws/home';
            const r = resolveDialPath(parts.join('/'), home);
            if ('path' in r && !parts.join('/').startsWith('/'))
              assert.ok(r.path.startsWith(`${home}/`), r.path);
          },
        ),
        { numRuns },
      ),
  },
  ...proxyProperties
    .filter((p) => !p.socket)
    .map((p) => ({ name: `PROXY: ${p.name}`, weight: 1, run: (n: number) => p.run(n) })),
  {
    name: 'k8shelld frames: decode(encode(field, data)) = data; garbage never throws',
    weight: 2,
    run: (numRuns) =>
      fc.assert(
        fc.property(fc.integer({ min: 1, max: 15 }), bytes(3000), bytes(40), (field, data, garbage) => {
          const enc = encodeBytesField(field, data);
          assert.deepEqual(decodeBytesField(enc, field), data);
          assert.equal(decodeBytesField(Buffer.concat([enc, Buffer.from([0])]), field), undefined);
          const g = decodeBytesField(garbage, field);
          if (g) assert.ok(g.length < garbage.length);
        }),
        { numRuns },
      ),
  },
  {
    name: 'config: ${VAR} substitution and !file never fail with anything but a load error',
    weight: 1,
    run: (numRuns) => {
      const dir = mkdtempSync(join(tmpdir(), 'spx-fuzz-'));
      try {
        fc.assert(
          fc.property(configText, fc.dictionary(varName, fc.string({ maxLength: 30 })), (t, env) => {
            try {
              parseConfig(t, { file: join(dir, 'c.yaml'), env });
            } catch (e) {
              assert.ok(isExpectedConfigError(e), `unexpected ${String(e)}`);
            }
            try {
              const s = substituteEnv(t, env);
              if (!t.includes('${')) assert.equal(s, t);
            } catch (e) {
              assert.ok(e instanceof YamlLoadError);
            }
            try {
              parseYaml(t, join(dir, 'c.yaml'), env);
            } catch (e) {
              assert.ok(e instanceof YamlLoadError, `unexpected ${String(e)}`);
            }
          }),
          { numRuns },
        );
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    },
  },
  {
    name: 'policy: parse refuses with an Error or compiles; evaluation never throws and always decides',
    weight: 2,
    run: (numRuns) =>
      fc.assert(
        fc.property(policyText, fc.array(policyRequest, { maxLength: 4 }), (t, reqs) => {
          let policy;
          try {
            policy = parsePolicy(t);
          } catch (e) {
            assert.ok(
              e instanceof Error && !(e instanceof TypeError) && !(e instanceof RangeError),
              String(e),
            );
            return;
          }
          for (const r of reqs) {
            const d = evaluatePolicy(policy, r);
            assert.equal(typeof d.allowed, 'boolean');
            assert.ok(d.rule.length > 0);
          }
        }),
        { numRuns },
      ),
  },
  {
    name: 'policy: globs compile for any text and match themselves when they have no wildcard',
    weight: 1,
    run: (numRuns) =>
      fc.assert(
        fc.property(text, fc.boolean(), (g, ci) => {
          const re = globToRegExp(g, ci);
          if (!/[*?[\]\\]/.test(g)) assert.ok(re.test(g));
        }),
        { numRuns },
      ),
  },
  {
    name: 'SSH env/pty-req/window-change: ssh2 decodes or refuses; sizes clamp; env stays within its bounds',
    weight: 3,
    run: (numRuns) =>
      fc.assert(
        fc.property(
          fc.array(
            fc.oneof(
              requestPayload('env', maybeBroken(envBody)),
              requestPayload('pty-req', maybeBroken(ptyBody)),
              requestPayload('window-change', maybeBroken(winBody)),
              bytes(64),
            ),
            { maxLength: 12 },
          ),
          (payloads) => {
            const limits = { acceptEnv: DEFAULT_ACCEPT_ENV, maxEnvCount: 4, maxEnvBytes: 600 };
            const state = { env: [] as [never, never][], envBytes: 0 };
            for (const p of payloads) {
              const r = decodeChannelRequest(p);
              if (!r.ok) continue;
              const d = r.value.data as Record<string, unknown> | undefined;
              if (r.value.type === 'pty-req' || r.value.type === 'window-change') {
                for (const k of ['cols', 'rows', 'width', 'height']) {
                  const c = clampSize(d?.[k]);
                  assert.ok(c >= 0 && c <= 0xffff);
                }
              }
              if (r.value.type === 'env' && d && d.name !== undefined) {
                const v = envAccepted(state as never, d.name as never, d.value as never, limits);
                // As the dispatcher's setEnv: a name sent again replaces its value.
                if (v.ok) {
                  const i = state.env.findIndex(([k]) => k === d.name);
                  if (i >= 0) state.env[i] = [d.name, d.value] as never;
                  else state.env.push([d.name, d.value] as never);
                }
                assert.ok(state.env.length <= limits.maxEnvCount);
                assert.ok(state.envBytes <= limits.maxEnvBytes);
              }
            }
          },
        ),
        { numRuns },
      ),
  },
  {
    name: 'SSH direct-tcpip/streamlocal opens: ssh2 decodes or refuses; our validators keep only sane values',
    weight: 2,
    run: (numRuns) =>
      fc.assert(
        fc.property(
          fc.oneof(
            openPayload('direct-tcpip', maybeBroken(tcpipBody)),
            openPayload('direct-streamlocal@openssh.com', maybeBroken(streamLocalBody)),
            bytes(80),
          ),
          (p) => {
            const r = decodeChannelOpen(p);
            if (!r.ok) return;
            if (r.value.type === 'direct-tcpip') {
              const d = tcpipPayload(r.value.data);
              if (d) {
                assert.ok(Number.isInteger(d.port) && d.port >= 0 && d.port <= 65535);
                assert.equal(typeof d.host, 'string');
                assert.ok(d.host.length > 0);
              }
            } else if (r.value.type === 'direct-streamlocal@openssh.com') {
              const s = streamLocalPath(r.value.data);
              if (s !== undefined) assert.ok(s.length > 0);
            }
          },
        ),
        { numRuns },
      ),
  },
];
