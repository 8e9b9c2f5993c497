// The policy language: globs, parsing errors, rule matching (first match wins), obligations, and a few
// fast-check properties of the matcher.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  ACTIONS,
  ALLOW_ALL,
  evaluatePolicy,
  globToRegExp,
  parsePolicy,
  parsePorts,
  type PolicyRequest,
} from '../../src/local/policy-rules.js';
import { buildRequest, type Action, type Subject } from '../../src/gateway/authorize.js';

const req = (action: Action, s: Partial<Subject> = {}): PolicyRequest =>
  buildRequest(action, { username: 'alice', workspace: 'ws-1', ...s });

function decide(yaml: string, r: PolicyRequest) {
  return evaluatePolicy(parsePolicy(yaml), r);
}

/** Escapes glob specials so the pattern matches `s` literally. */
const literal = (s: string) => s.replace(/[\\*?[]/g, '\\$&');

describe('policy globs', () => {
  test('*, ?, classes, negation and escapes', () => {
    const m = (g: string, s: string, ci = false) => globToRegExp(g, ci).test(s);
    assert.ok(m('rm -rf /*', 'rm -rf /home/x'), '* crosses /');
    assert.ok(m('*', ''));
    assert.ok(m('*', 'a\nb'), '* crosses newlines');
    assert.ok(!m('rm -rf /\\*', 'rm -rf /home'), '\\* is a literal star');
    assert.ok(m('rm -rf /\\*', 'rm -rf /*'));
    assert.ok(m('ws-?', 'ws-1') && !m('ws-?', 'ws-10'));
    assert.ok(m('[a-c]x', 'bx') && !m('[a-c]x', 'dx'));
    assert.ok(m('[!0-9]x', 'ax') && !m('[!0-9]x', '1x'));
    assert.ok(m('a[b', 'a[b'), 'an unterminated class is literal');
    assert.ok(m('a.b+c(d)', 'a.b+c(d)') && !m('a.b', 'axb'), 'regex specials are literal');
    assert.ok(m('DB.*', 'db.internal', true) && !m('DB.*', 'db.internal'));
  });

  test('property: an escaped string matches exactly itself', () => {
    fc.assert(
      fc.property(fc.string(), fc.string(), (a, b) => {
        const re = globToRegExp(literal(a));
        assert.equal(re.test(a), true);
        assert.equal(re.test(b), a === b);
      }),
    );
  });

  test('property: prefix* matches exactly the strings with that prefix', () => {
    fc.assert(
      fc.property(fc.string(), fc.string(), (prefix, s) => {
        assert.equal(globToRegExp(`${literal(prefix)}*`).test(s), s.startsWith(prefix));
      }),
    );
  });
});

describe('policy parsing', () => {
  test('errors name the rule and the key', () => {
    assert.throws(() => parsePolicy('rules:\n  - action: ssh:exec\n    efect: deny\n'), /efect/);
    assert.throws(() => parsePolicy('rules:\n  - action: ssh:exec\n'), /effect/);
    assert.throws(
      () => parsePolicy('rules:\n  - name: typo\n    action: ssh:exce\n    effect: deny\n'),
      /rules\[0\] \(typo\)\.action: unknown action "ssh:exce"/,
    );
    assert.throws(
      () => parsePolicy('rules:\n  - action: ssh:direct-tcpip\n    port: 4000-3000\n    effect: deny\n'),
      /rules\[0\]\.port: port "4000-3000"/,
    );
    assert.throws(() => parsePolicy('default: maybe\n'), /default/);
    assert.throws(() => parsePolicy('rules: []\nrules: []\n'), /[Mm]ap keys must be unique/);
    assert.throws(
      () => parsePolicy('rules:\n  - action: ssh:exec\n    effect: allow\n    record: [tty]\n'),
      /record/,
    );
    assert.deepEqual(parsePorts([22, '3000-3999', ' 8080 ']), [
      [22, 22],
      [3000, 3999],
      [8080, 8080],
    ]);
    assert.throws(() => parsePorts(['0']));
    assert.throws(() => parsePorts(['70000']));
  });

  test('an empty file is allow-all', () => {
    assert.equal(parsePolicy('').defaultEffect, 'allow');
    assert.equal(parsePolicy('# nothing\n').rules.length, 0);
  });
});

describe('policy decisions', () => {
  test('first match wins; the default decides the rest', () => {
    const yaml = `
default: deny
rules:
  - action: ssh:exec
    command: "ls*"
    effect: allow
  - name: no exec
    action: ssh:exec
    effect: deny
  - action: "ssh:*"
    effect: allow
    reason: ssh is fine
`;
    assert.deepEqual(decide(yaml, req('ssh:exec', { command: 'ls -l' })), {
      allowed: true,
      reason: '',
      obligations: {},
      rule: '#1',
    });
    assert.deepEqual(decide(yaml, req('ssh:exec', { command: 'rm x' })), {
      allowed: false,
      reason: 'denied by policy rule "no exec"',
      obligations: {},
      rule: '"no exec"',
    });
    assert.equal(decide(yaml, req('ssh:sftp')).reason, 'ssh is fine');
    assert.deepEqual(decide(yaml, req('workspace:create')), {
      allowed: false,
      reason: 'no policy rule allows workspace:create',
      obligations: {},
      rule: 'default',
    });
  });

  test('user, workspace, blueprint and context conditions', () => {
    const yaml = `
default: deny
rules:
  - user: ["ops-*", Bob]
    action: ssh:shell
    blueprint: prod
    asUser: root
    pty: true
    effect: allow
  - workspace: "ws-*"
    action: ssh:direct-tcpip
    host: "*.INTERNAL"
    port: [22, 5000-5999]
    effect: allow
  - action: ssh:direct-streamlocal
    socketPath: /run/user/*/app.sock
    effect: allow
  - action: session:record
    sessionType: [shell, exec]
    effect: allow
    record: [shell, exec]
  - action: user:auth
    context: { surface: ssh }
    user: carol
    effect: allow
    authMethods: [password]
`;
    const shell = (s: Partial<Subject>) => decide(yaml, req('ssh:shell', s)).allowed;
    assert.ok(shell({ username: 'ops-1', blueprint: 'prod', asUser: 'root', pty: true }));
    assert.ok(
      shell({ username: 'bob', blueprint: 'prod', asUser: 'root', pty: true }),
      'user is case-insensitive',
    );
    assert.ok(!shell({ username: 'ops-1', blueprint: 'dev', asUser: 'root', pty: true }));
    assert.ok(!shell({ username: 'ops-1', asUser: 'root', pty: true }), 'no blueprint, no match');
    assert.ok(!shell({ username: 'ops-1', blueprint: 'prod', asUser: 'root' }), 'pty: false');
    assert.ok(!shell({ username: 'ops-1', blueprint: 'prod', pty: true }), 'no as_user');

    const fwd = (s: Partial<Subject>) => decide(yaml, req('ssh:direct-tcpip', s)).allowed;
    assert.ok(fwd({ host: 'db.internal', port: 5432 }));
    assert.ok(fwd({ host: 'git.internal', port: 22 }));
    assert.ok(!fwd({ host: 'db.internal', port: 6000 }));
    assert.ok(!fwd({ host: 'example.com', port: 22 }));
    assert.ok(!fwd({ workspace: 'other', host: 'db.internal', port: 22 }));

    assert.ok(decide(yaml, req('ssh:direct-streamlocal', { socketPath: '/run/user/1000/app.sock' })).allowed);
    assert.ok(!decide(yaml, req('ssh:direct-streamlocal', { socketPath: '/var/run/docker.sock' })).allowed);

    assert.deepEqual(decide(yaml, req('session:record', { sessionType: 'exec' })).obligations, {
      record: 'shell,exec',
    });
    assert.ok(!decide(yaml, req('session:record', { sessionType: 'sftp' })).allowed);

    assert.deepEqual(decide(yaml, req('user:auth', { username: 'carol' })).obligations, {
      auth_methods: '["password"]',
    });
  });

  test('an allowed user:auth without authMethods offers publickey and password', () => {
    assert.deepEqual(evaluatePolicy(ALLOW_ALL, req('user:auth')), {
      allowed: true,
      reason: '',
      obligations: { auth_methods: '["publickey","password"]' },
      rule: 'default',
    });
    const denied = decide('default: deny\n', req('user:auth'));
    assert.deepEqual(denied.obligations, {}, 'no methods with a deny');
    assert.deepEqual(evaluatePolicy(ALLOW_ALL, req('ssh:exec', { command: 'x' })).obligations, {});
  });

  test('property: the decision is the first rule whose action matches, else the default', () => {
    const rule = fc.record({
      action: fc.constantFrom<string>(...ACTIONS, 'ssh:*', '*'),
      effect: fc.constantFrom('allow', 'deny'),
    });
    fc.assert(
      fc.property(
        fc.array(rule, { maxLength: 8 }),
        fc.constantFrom(...ACTIONS),
        fc.constantFrom('allow', 'deny'),
        (rules, action, def) => {
          const yaml = JSON.stringify({ default: def, rules });
          const d = decide(yaml, req(action, { command: 'c', host: 'h', port: 1, socketPath: '/s' }));
          const first = rules.findIndex((r) => globToRegExp(r.action).test(action));
          const want = first < 0 ? def : rules[first]?.effect;
          assert.equal(d.allowed, want === 'allow');
          assert.equal(d.rule, first < 0 ? 'default' : `#${first + 1}`);
        },
      ),
    );
  });

  test('property: a port range rule matches exactly the ports inside it', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 65535 }),
        fc.integer({ min: 1, max: 65535 }),
        fc.integer({ min: 1, max: 65535 }),
        (a, b, p) => {
          const [lo, hi] = a <= b ? [a, b] : [b, a];
          const yaml = `default: deny\nrules:\n  - action: ssh:direct-tcpip\n    port: ${lo}-${hi}\n    effect: allow\n`;
          assert.equal(
            decide(yaml, req('ssh:direct-tcpip', { host: 'h', port: p })).allowed,
            p >= lo && p <= hi,
          );
        },
      ),
    );
  });

  test('property: any request evaluates without throwing', () => {
    const policy = parsePolicy(
      'rules:\n  - command: "a*"\n    port: 1-9\n    host: "x*"\n    blueprint: b\n    effect: deny\n',
    );
    const strMap = fc.dictionary(fc.string({ maxLength: 12 }), fc.string({ maxLength: 12 }), { maxKeys: 5 });
    fc.assert(
      fc.property(
        fc.string(),
        fc.option(fc.record({ type: fc.string(), id: fc.string(), attributes: strMap }), { nil: undefined }),
        strMap,
        (action, resource, context) => {
          const d = evaluatePolicy(policy, { action, resource, context });
          assert.equal(typeof d.allowed, 'boolean');
        },
      ),
    );
  });
});
