import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import {
  canonicalUserStr,
  parseUserStr,
  pathEscape,
  UserStrError,
  workspaceNameFor,
  type UserStrErrorKind,
} from '../../src/gateway/userstr.js';

const b64 = (s: string): string => Buffer.from(s, 'utf8').toString('base64url');

function expectError(input: string, kind: UserStrErrorKind): void {
  assert.throws(
    () => parseUserStr(input),
    (err: unknown) => {
      assert.ok(
        err instanceof UserStrError,
        `expected UserStrError for ${JSON.stringify(input)}, got ${err}`,
      );
      assert.equal(err.kind, kind, `${JSON.stringify(input)}: ${err.message}`);
      const text = {
        malformed: 'userstr malformed',
        invalid: 'userstr invalid',
        too_long: 'identifier too long',
        base64_invalid: 'base64 userstr invalid',
      }[kind];
      assert.ok(err.message === text || err.message.startsWith(`${text}: `), err.message);
      return true;
    },
  );
}

describe('parseUserStr: §7.4 examples', () => {
  it('alice → implicit', () => {
    const u = parseUserStr('alice');
    assert.equal(u.form, 'implicit');
    assert.equal(u.username, 'alice');
    assert.equal(u.blueprint, '');
    assert.equal(u.blueprintKind, 'implicit');
    assert.equal(canonicalUserStr(u), 'alice');
  });

  it('bob~dev → explicit blueprint dev', () => {
    const u = parseUserStr('bob~dev');
    assert.equal(u.form, 'explicit');
    assert.equal(u.username, 'bob');
    assert.equal(u.blueprint, 'dev');
    assert.equal(u.blueprintKind, 'explicit');
    assert.equal(u.asUser, '');
  });

  it('alice~dev+user=root → run as root', () => {
    const u = parseUserStr('alice~dev+user=root');
    assert.equal(u.form, 'explicit');
    assert.equal(u.blueprint, 'dev');
    assert.equal(u.asUser, 'root');
    assert.equal(canonicalUserStr(u), 'alice~dev+user=root');
  });

  it('alice~pod=ws1+ns=team-a → named workspace', () => {
    const u = parseUserStr('alice~pod=ws1+ns=team-a');
    assert.equal(u.form, 'named');
    assert.equal(u.pod, 'ws1');
    assert.equal(u.namespace, 'team-a');
    assert.equal(canonicalUserStr(u), 'alice~pod=ws1+ns=team-a');
    assert.equal(workspaceNameFor(u), 'ws1');
  });

  it('carol~repo=myorg%2Fproject1 → repo', () => {
    const u = parseUserStr('carol~repo=myorg%2Fproject1');
    assert.equal(u.form, 'repo');
    assert.equal(u.repoOwner, 'myorg');
    assert.equal(u.repoName, 'project1');
    assert.equal(u.blueprint, 'repo-myorg-project1');
    assert.equal(u.blueprintKind, 'custom');
  });

  it('eve~repo=acme/portal+ref=v1.2 → repo at ref', () => {
    const u = parseUserStr('eve~repo=acme/portal+ref=v1.2');
    assert.equal(u.form, 'repo');
    assert.equal(u.repoOwner, 'acme');
    assert.equal(u.repoName, 'portal');
    assert.equal(u.ref, 'v1.2');
  });

  it('bob~dev+workload=Deployment%2Fidentity+ns=team-a → inject into workload', () => {
    const u = parseUserStr('bob~dev+workload=Deployment%2Fidentity+ns=team-a');
    assert.equal(u.form, 'explicit');
    assert.equal(u.blueprint, 'dev');
    assert.equal(u.workloadKind, 'deployment');
    assert.equal(u.workloadName, 'identity');
    assert.equal(u.namespace, 'team-a');
    assert.equal(canonicalUserStr(u), 'bob~dev+workload=deployment%2Fidentity+ns=team-a');
  });

  it('b64-… decodes to eve~repo=acme/portal+ref=v1.2', () => {
    const login = 'b64-ZXZlfnJlcG89YWNtZS9wb3J0YWwrcmVmPXYxLjI';
    const u = parseUserStr(login);
    assert.equal(u.raw, login);
    assert.equal(u.username, 'eve');
    assert.equal(u.form, 'repo');
    assert.equal(u.repoOwner, 'acme');
    assert.equal(u.repoName, 'portal');
    assert.equal(u.ref, 'v1.2');
    assert.equal(canonicalUserStr(u), canonicalUserStr(parseUserStr('eve~repo=acme/portal+ref=v1.2')));
  });
});

describe('parseUserStr: details', () => {
  it('trims, lowercases the username, keeps blueprint case, lowercases parameter values and keys', () => {
    const u = parseUserStr('  Alice~MyBP+USER=Root  ');
    assert.equal(u.username, 'alice');
    assert.equal(u.blueprint, 'MyBP');
    assert.equal(u.asUser, 'root');
    const r = parseUserStr('Dan~REPO=Org/Proj+Ref=Main');
    assert.equal(r.repoOwner, 'org');
    assert.equal(r.repoName, 'proj');
    assert.equal(r.ref, 'main');
  });

  it('a trailing ~ is the implicit form', () => {
    assert.equal(parseUserStr('bob~').form, 'implicit');
  });

  it('repo owner defaults to the username', () => {
    const u = parseUserStr('bob~repo=proj');
    assert.equal(u.repoOwner, 'bob');
    assert.equal(u.blueprint, 'repo-bob-proj');
  });

  it('base64- prefix is case-insensitive and nests', () => {
    assert.equal(parseUserStr(`BASE64-${b64('bob~dev')}`).blueprint, 'dev');
    assert.equal(parseUserStr(`B64-${b64('bob~dev')}`).blueprint, 'dev');
    assert.equal(parseUserStr(`b64-${b64(`base64-${b64('carol~pod=x')}`)}`).pod, 'x');
  });

  it('URL-path-unescapes blueprint and values, with UTF-8', () => {
    assert.equal(parseUserStr('bob~my%20bp').blueprint, 'my bp');
    assert.equal(parseUserStr('bob~caf%C3%A9').blueprint, 'café');
  });

  it('128 runes are fine, counted as code points', () => {
    assert.equal(parseUserStr('a'.repeat(128)).username, 'a'.repeat(128));
    assert.equal(parseUserStr('😀'.repeat(128)).username, '😀'.repeat(128));
  });

  it('repo form with workload and ns', () => {
    const u = parseUserStr('eve~repo=acme/portal+workload=statefulset/db+ns=data+user=dev');
    assert.equal(u.workloadKind, 'statefulset');
    assert.equal(u.workloadName, 'db');
    assert.equal(u.namespace, 'data');
    assert.equal(u.asUser, 'dev');
  });
});

describe('parseUserStr: errors', () => {
  it('malformed', () => {
    for (const s of [
      '',
      '   ',
      '~dev',
      '~',
      'bob~+user=root',
      'bob~dev++user=root',
      'bob~dev+',
      'bob~repo=a+',
      'bob~repo=a++ref=b',
      'bob~repo=a=b',
      'bob~dev+user=a=b',
      'bob~repo=x+ref',
      'bob~repo=',
      'bob~dev+user=',
      'bob~=x',
      'bob~repo=a%2',
      'bob~repo=a%zz',
      'bob~bp%',
      'bob~repo=%ff',
      'bob~dev%00',
      'b\u0001ob',
    ]) {
      expectError(s, 'malformed');
    }
    expectError(`b64-${b64('~dev')}`, 'malformed');
  });

  it('invalid', () => {
    for (const s of [
      'bob~dev+pod=x',
      'bob~dev+repo=x',
      'bob~dev+ref=x',
      'bob~dev+color=blue',
      'bob~pod=ws1+repo=x',
      'bob~pod=ws1+workload=deployment/x+ns=a',
      'bob~pod=ws1+ref=main',
      'bob~ns=a',
      'bob~user=root',
      'bob~ref=main',
      'bob~repo=x+workload=deployment/y',
      'bob~repo=x+ns=a',
      'bob~dev+workload=deployment/y',
      'bob~dev+ns=a',
      'bob~dev+workload=deployment+ns=a',
      'bob~dev+workload=a/b/c+ns=a',
      'bob~dev+workload=/b+ns=a',
      'bob~repo=a/b/c',
      'bob~repo=/b',
      'bob~repo=a/',
      'bob~repo=x+repo=y',
      'bob~foo=bar',
      'bob~dev%2Buser%3Droot',
      'bob~dev%3Dx',
      'bob~repo=a%2Bb',
      'bob~pod=a%3Db',
      'a=b~repo=x',
      'a+b',
      'a/b~dev',
      'bob ~dev',
      'a b',
    ]) {
      expectError(s, 'invalid');
    }
  });

  it('too long', () => {
    expectError('a'.repeat(129), 'too_long');
    expectError(`bob~${'x'.repeat(125)}`, 'too_long');
    expectError('😀'.repeat(129), 'too_long');
    // b64 of a too-long string: the envelope itself is over the limit (base64 only ever shrinks when
    // decoded, so the limit on the decoded string is implied by the one on the envelope).
    expectError(`b64-${b64(`bob~${'x'.repeat(200)}`)}`, 'too_long');
    expectError(`base64-${b64('é'.repeat(100))}`, 'too_long');
  });

  it('base64 invalid', () => {
    for (const s of ['b64-', 'b64-!!!!', 'b64-abc=', 'b64-a', 'base64-ab+c', 'b64-ab/c', 'b64-a b']) {
      expectError(s, 'base64_invalid');
    }
    expectError(`b64-${Buffer.from([0xff, 0xfe, 0x41]).toString('base64url')}`, 'base64_invalid');
  });

  it('non-string input is a UserStrError, not a crash', () => {
    expectError(undefined as unknown as string, 'malformed');
  });
});

describe('canonicalUserStr', () => {
  it('§7.3 examples', () => {
    assert.equal(
      canonicalUserStr(parseUserStr('eve~repo=acme/portal+ref=v1.2')),
      'eve~ref=v1.2+repo=acme%2Fportal',
    );
    assert.equal(canonicalUserStr(parseUserStr('bob~repo=proj')), 'bob~repo=bob%2Fproj');
  });

  it('sorts repo parameters by key name', () => {
    const u = parseUserStr('eve~workload=deployment/api+user=dev+repo=acme/portal+ns=team+ref=main');
    assert.equal(
      canonicalUserStr(u),
      'eve~ns=team+ref=main+repo=acme%2Fportal+user=dev+workload=deployment%2Fapi',
    );
  });

  it('explicit and named forms', () => {
    assert.equal(
      canonicalUserStr(parseUserStr('bob~dev+user=root+ns=a+workload=job/x')),
      'bob~dev+workload=job%2Fx+ns=a+user=root',
    );
    assert.equal(canonicalUserStr(parseUserStr('bob~My%2FBP')), 'bob~My%2FBP');
    assert.equal(canonicalUserStr(parseUserStr('bob~pod=ws1+user=root')), 'bob~pod=ws1+user=root');
    assert.equal(canonicalUserStr(parseUserStr('bob~pod=ws1+user=root+ns=x')), 'bob~pod=ws1+ns=x+user=root');
  });

  it('escapes like Go url.PathEscape', () => {
    assert.equal(pathEscape('a/b;c,d?e f'), 'a%2Fb%3Bc%2Cd%3Fe%20f');
    assert.equal(pathEscape('+=:@&$-_.~'), '+=:@&$-_.~');
    assert.equal(pathEscape('é%!*'), '%C3%A9%25%21%2A');
  });
});

describe('workspaceNameFor', () => {
  it('is <username>-<7 hex of sha256(key)>', async () => {
    const { createHash } = await import('node:crypto');
    const h = (s: string): string => createHash('sha256').update(s).digest('hex').slice(0, 7);
    assert.equal(workspaceNameFor(parseUserStr('alice')), `alice-${h('u=alice')}`);
    assert.equal(workspaceNameFor(parseUserStr('bob~dev')), `bob-${h('u=bob|bp=dev')}`);
    assert.equal(
      workspaceNameFor(parseUserStr('eve~repo=acme/portal+ref=v1.2')),
      `eve-${h('u=eve|r=acme/portal|ref=v1.2|bp=repo-acme-portal')}`,
    );
    assert.equal(
      workspaceNameFor(parseUserStr('bob~dev+workload=deployment/x+ns=a')),
      `bob-${h('u=bob|bp=dev|workload=deployment/x')}`,
    );
    assert.match(workspaceNameFor(parseUserStr('zed~x')), /^zed-[0-9a-f]{7}$/);
  });
});

// Seeded PRNG (mulberry32) so a failure is reproducible from the printed seed.
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

describe('parseUserStr: property loop', () => {
  const ALPHABET = [
    'a',
    'B',
    'z',
    '0',
    '-',
    '.',
    '_',
    '~',
    '+',
    '=',
    '/',
    '%',
    '%2F',
    '%2B',
    '%3D',
    '%20',
    ' ',
    'é',
    '😀',
    '%C3%A9',
    '%zz',
    '\t',
    'b64-',
    '@',
  ];
  const KEYS = ['repo', 'ref', 'user', 'pod', 'ns', 'workload', 'REPO', 'x'];

  it('only UserStrError is thrown, and canonical forms re-parse to themselves', () => {
    const seed = 0x5eed;
    const rand = rng(seed);
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)] as T;
    const word = (max: number): string => {
      let s = '';
      const n = Math.floor(rand() * max);
      for (let i = 0; i < n; i++) s += pick(ALPHABET);
      return s;
    };
    const gen = (): string => {
      const user = word(6) || 'u';
      switch (Math.floor(rand() * 5)) {
        case 0:
          return word(20);
        case 1:
          return `${user}~${word(8)}${rand() < 0.5 ? `+${pick(KEYS)}=${word(6)}` : ''}`;
        default: {
          const n = 1 + Math.floor(rand() * 4);
          const segs: string[] = [];
          for (let i = 0; i < n; i++) segs.push(`${pick(KEYS)}=${word(6) || 'v'}`);
          const s = `${user}~${segs.join('+')}`;
          return rand() < 0.2 ? `b64-${b64(s)}` : s;
        }
      }
    };
    let parsed = 0;
    for (let i = 0; i < 20000; i++) {
      const input = gen();
      let u;
      try {
        u = parseUserStr(input);
      } catch (err) {
        assert.ok(
          err instanceof UserStrError,
          `seed ${seed} #${i} ${JSON.stringify(input)} threw ${String(err)}`,
        );
        continue;
      }
      parsed++;
      const canon = canonicalUserStr(u);
      if ([...canon].length > 128) continue; // the canonical form may grow (escapes, default owner)
      let again;
      try {
        again = parseUserStr(canon);
      } catch (err) {
        assert.fail(`seed ${seed} #${i} ${JSON.stringify(input)} → ${JSON.stringify(canon)}: ${String(err)}`);
      }
      assert.equal(canonicalUserStr(again), canon, `seed ${seed} #${i} ${JSON.stringify(input)}`);
      assert.deepEqual(
        { ...again, raw: '' },
        { ...u, raw: '' },
        `seed ${seed} #${i} ${JSON.stringify(input)}`,
      );
    }
    assert.ok(parsed > 1000, `too few inputs parsed (${parsed}); generator is off`);
  });
});
