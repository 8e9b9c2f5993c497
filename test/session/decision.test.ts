// The recording decision (reference-behaviour §15.1–15.3, §2.1, §2.3), exhaustively: every kind ×
// every obligation token set × every static flag, plus the direct-tcpip format and VS Code rules.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  decideRecording,
  parseRecordObligation,
  type RecordingDecisionConfig,
} from '../../src/gateway/recording-decision.js';
import { applyDefaults, decodeConfig } from '../../src/config/validate.js';
import { RecordingFormat } from '../../src/gen/session/v1/session.js';
import type { RecordedKind } from '../../src/gateway/tap.js';

const F = RecordingFormat;

function cfg(recording: Record<string, unknown>, sessionAddress = ''): RecordingDecisionConfig {
  const c = applyDefaults(
    decodeConfig({ server: { port: 1, recording }, session: { address: sessionAddress } }),
  );
  return { recording: c.server.recording, sessionAddress: c.session.address };
}

/** Without running applyDefaults (the decision applies the §2.1 default itself, idempotently). */
function rawCfg(recording: Record<string, unknown>, sessionAddress: string): RecordingDecisionConfig {
  const c = decodeConfig({ server: { port: 1, recording } });
  return { recording: c.server.recording, sessionAddress };
}

const TOKENS = ['shell', 'exec', 'direct-tcpip', 'sftp', 'vscode-terminals', 'vscode-input'] as const;
const KINDS: RecordedKind[] = ['shell', 'exec', 'sftp', 'tcpip'];

describe('parseRecordObligation', () => {
  test('tokens, none, unknown tokens, spaces; vscode-input implies vscode-terminals', () => {
    assert.deepEqual(parseRecordObligation('none'), {
      shell: false,
      exec: false,
      sftp: false,
      directTcpip: false,
      vscodeTerminals: false,
      vscodeInput: false,
    });
    assert.deepEqual(parseRecordObligation('shell, exec,bogus,,SFTP'), {
      shell: true,
      exec: true,
      sftp: false,
      directTcpip: false,
      vscodeTerminals: false,
      vscodeInput: false,
    });
    const v = parseRecordObligation('vscode-input');
    assert.equal(v.vscodeInput, true);
    assert.equal(v.vscodeTerminals, true);
    assert.equal(v.directTcpip, false);
  });
});

describe('decideRecording', () => {
  test('every subset of tokens decides shell/exec/sftp by its own token, regardless of static flags', () => {
    const allOn = cfg({ recordShell: true, recordExec: true, recordSFTP: true, recordDirectTCPIP: true });
    const allOff = cfg({});
    for (let mask = 0; mask < 1 << TOKENS.length; mask++) {
      const tokens = TOKENS.filter((_, i) => mask & (1 << i));
      const obligation = tokens.length ? tokens.join(',') : 'none';
      for (const c of [allOn, allOff]) {
        for (const kind of ['shell', 'exec', 'sftp'] as const) {
          const d = decideRecording(kind, obligation, c);
          assert.equal(d.record, tokens.includes(kind), `${kind} with "${obligation}"`);
        }
        const t = decideRecording('tcpip', obligation, c);
        const wantTcpip =
          tokens.includes('direct-tcpip') ||
          tokens.includes('vscode-terminals') ||
          tokens.includes('vscode-input');
        assert.equal(t.record, wantTcpip, `tcpip with "${obligation}"`);
      }
    }
  });

  test('no obligation: the static flags decide, one per kind', () => {
    const flags = ['recordShell', 'recordExec', 'recordSFTP', 'recordDirectTCPIP'] as const;
    for (let mask = 0; mask < 16; mask++) {
      const rec: Record<string, boolean> = {};
      flags.forEach((f, i) => (rec[f] = (mask & (1 << i)) !== 0));
      const c = cfg(rec);
      KINDS.forEach((kind, i) => {
        assert.equal(
          decideRecording(kind, undefined, c).record,
          (mask & (1 << i)) !== 0,
          `${kind} mask ${mask}`,
        );
      });
    }
  });

  test('"none" and an empty obligation are found obligations: nothing is recorded even with static flags on', () => {
    const c = cfg({ recordShell: true, recordExec: true, recordSFTP: true, recordDirectTCPIP: true });
    for (const o of ['none', '', 'unknown-token'])
      for (const kind of KINDS) assert.equal(decideRecording(kind, o, c).record, false, `${kind} "${o}"`);
  });

  test('options: omitted when every field is unset, else format/gzip as configured; never vscode on session streams', () => {
    assert.deepEqual(decideRecording('shell', 'shell', cfg({})), { record: true, options: undefined });
    assert.deepEqual(decideRecording('exec', 'exec', cfg({ exec: { gzip: false } })), {
      record: true,
      options: { format: F.RECORDING_FORMAT_UNSPECIFIED, gzip: false, vscode: undefined },
    });
    assert.deepEqual(decideRecording('shell', 'shell', cfg({ shell: { format: 'asciinema', gzip: true } })), {
      record: true,
      options: { format: F.RECORDING_FORMAT_ASCIINEMA, gzip: true, vscode: undefined },
    });
    assert.deepEqual(decideRecording('sftp', 'sftp', cfg({ sftp: { format: 'pcapng' } })), {
      record: true,
      options: { format: F.RECORDING_FORMAT_PCAPNG, gzip: undefined, vscode: undefined },
    });
    // A session address turns the VS Code defaults on; they belong to directTCPIP only.
    assert.deepEqual(decideRecording('shell', 'shell', cfg({}, 'session:9010')), {
      record: true,
      options: undefined,
    });
  });

  describe('direct-tcpip (§15.3)', () => {
    test('no obligation: raw = recordDirectTCPIP, terminals = vscode.terminals', () => {
      assert.deepEqual(decideRecording('tcpip', undefined, cfg({})), { record: false });
      assert.deepEqual(decideRecording('tcpip', undefined, cfg({ recordDirectTCPIP: true })), {
        record: true,
        options: undefined,
      });
      // The sample: pcapng + terminals on, input off.
      assert.deepEqual(
        decideRecording(
          'tcpip',
          undefined,
          cfg({
            recordDirectTCPIP: true,
            directTCPIP: { format: 'pcapng', vscode: { terminals: true, recordInput: false } },
          }),
        ),
        {
          record: true,
          options: {
            format: F.RECORDING_FORMAT_PCAPNG,
            gzip: undefined,
            vscode: { terminals: true, recordInput: false },
          },
        },
      );
      // Terminals only → format none.
      assert.deepEqual(
        decideRecording('tcpip', undefined, cfg({ directTCPIP: { vscode: { terminals: true } } })),
        {
          record: true,
          options: {
            format: F.RECORDING_FORMAT_NONE,
            gzip: undefined,
            vscode: { terminals: true, recordInput: undefined },
          },
        },
      );
      // Raw wanted but format none → unspecified (service default).
      assert.deepEqual(
        decideRecording(
          'tcpip',
          undefined,
          cfg({ recordDirectTCPIP: true, directTCPIP: { format: 'none', vscode: { terminals: true } } }),
        ),
        {
          record: true,
          options: {
            format: F.RECORDING_FORMAT_UNSPECIFIED,
            gzip: undefined,
            vscode: { terminals: true, recordInput: undefined },
          },
        },
      );
    });

    test('the session address turns unset VS Code options on (§2.1), explicit values win', () => {
      assert.deepEqual(decideRecording('tcpip', undefined, cfg({}, 'session:9010')), {
        record: true,
        options: {
          format: F.RECORDING_FORMAT_NONE,
          gzip: undefined,
          vscode: { terminals: true, recordInput: true },
        },
      });
      assert.deepEqual(
        decideRecording(
          'tcpip',
          undefined,
          cfg({ directTCPIP: { vscode: { terminals: false } } }, 'session:9010'),
        ),
        {
          record: false,
        },
      );
      // The same answer whether or not applyDefaults ran before.
      for (const rec of [
        {},
        { recordDirectTCPIP: true },
        { directTCPIP: { vscode: { recordInput: false } } },
      ]) {
        assert.deepEqual(
          decideRecording('tcpip', undefined, rawCfg(rec, 'session:9010')),
          decideRecording('tcpip', undefined, cfg(rec, 'session:9010')),
        );
      }
    });

    test('an obligation overwrites the vscode options with its own flags', () => {
      const c = cfg(
        {
          recordDirectTCPIP: true,
          directTCPIP: { format: 'pcapng', vscode: { terminals: true, recordInput: true } },
        },
        'x:1',
      );
      assert.deepEqual(decideRecording('tcpip', 'direct-tcpip', c), {
        record: true,
        options: {
          format: F.RECORDING_FORMAT_PCAPNG,
          gzip: undefined,
          vscode: { terminals: false, recordInput: false },
        },
      });
      assert.deepEqual(decideRecording('tcpip', 'vscode-input', c), {
        record: true,
        options: {
          format: F.RECORDING_FORMAT_NONE,
          gzip: undefined,
          vscode: { terminals: true, recordInput: true },
        },
      });
      assert.deepEqual(decideRecording('tcpip', 'shell,vscode-terminals', c), {
        record: true,
        options: {
          format: F.RECORDING_FORMAT_NONE,
          gzip: undefined,
          vscode: { terminals: true, recordInput: false },
        },
      });
      assert.deepEqual(decideRecording('tcpip', 'shell', c), { record: false });
    });

    test('the shared configuration is never modified', () => {
      const c = cfg({
        recordDirectTCPIP: true,
        directTCPIP: { format: 'none', vscode: { terminals: true } },
      });
      const before = JSON.stringify(c);
      decideRecording('tcpip', 'vscode-input', c);
      decideRecording('tcpip', undefined, c);
      assert.equal(JSON.stringify(c), before);
    });
  });

  test('property: decisions are total, and the format is never none when raw data is recorded', () => {
    const fmt = fc.constantFrom('', 'asciinema', 'pcapng');
    fc.assert(
      fc.property(
        fc.constantFrom(...KINDS),
        fc.option(
          fc.subarray([...TOKENS, 'none', 'bogus']).map((t) => t.join(',')),
          { nil: undefined },
        ),
        fc.record({
          recordShell: fc.boolean(),
          recordExec: fc.boolean(),
          recordSFTP: fc.boolean(),
          recordDirectTCPIP: fc.boolean(),
        }),
        fmt,
        fc.option(fc.boolean(), { nil: undefined }),
        fc.boolean(),
        (kind, obligation, flags, format, terminals, withSession) => {
          const c = cfg(
            {
              ...flags,
              directTCPIP: { format, ...(terminals === undefined ? {} : { vscode: { terminals } }) },
            },
            withSession ? 's:1' : '',
          );
          const d = decideRecording(kind, obligation, c);
          if (!d.record || kind !== 'tcpip') return;
          const raw =
            obligation === undefined
              ? flags.recordDirectTCPIP
              : obligation.split(',').includes('direct-tcpip');
          if (raw) assert.notEqual(d.options?.format, F.RECORDING_FORMAT_NONE);
          else assert.equal(d.options?.format, F.RECORDING_FORMAT_NONE);
        },
      ),
      { numRuns: 300 },
    );
  });
});
