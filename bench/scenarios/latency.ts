// Interactive latency: one byte typed into a PTY session (OpenSSH client under node-pty, remote tty raw,
// `cat` echoing) and its echo awaited; gateway and sshd sessions alternate byte by byte.
import pty, { type IPty } from 'node-pty';
import { errText } from '../../src/ops/log.js';
import { scenarioResult, type ScenarioResult, type SideOutcome } from '../result.js';
import { median, percentile } from '../stats.js';
import type { Side, Target } from '../target.js';

interface Session {
  p: IPty;
  /** Resolves when `text` has appeared in the output since the last call. */
  expect(text: string, timeoutMs: number): Promise<void>;
}

function open(t: Target): Session {
  const cmd = 'stty raw -echo; echo READY; exec cat';
  const p = pty.spawn('ssh', [...t.sshArgs(), '-tt', t.destination, cmd], {
    cols: 80,
    rows: 24,
    name: 'xterm',
  });
  let buf = '';
  let want: { text: string; done: () => void } | undefined;
  p.onData((d) => {
    buf += d;
    if (want && buf.includes(want.text)) {
      const w = want;
      want = undefined;
      buf = '';
      w.done();
    }
  });
  let exited = false;
  p.onExit(() => (exited = true));
  return {
    p,
    expect: (text, timeoutMs) =>
      new Promise<void>((resolve, reject) => {
        if (exited) return reject(new Error(`the ${t.side} session has ended; output: ${buf.slice(-200)}`));
        const timer = setTimeout(
          () =>
            reject(
              new Error(`no "${text}" from ${t.side} within ${timeoutMs} ms; output: ${buf.slice(-200)}`),
            ),
          timeoutMs,
        );
        const done = () => {
          clearTimeout(timer);
          resolve();
        };
        if (buf.includes(text)) {
          buf = '';
          done();
        } else want = { text, done };
      }),
  };
}

export async function measureLatency(
  targets: Target[],
  count: number,
  log: (s: string) => void,
): Promise<ScenarioResult[]> {
  const state = new Map<Side, { s?: Session; ms: number[]; error?: string }>();
  for (const t of targets) {
    const st: { s?: Session; ms: number[]; error?: string } = { ms: [] };
    state.set(t.side, st);
    try {
      st.s = open(t);
      await st.s.expect('READY', 30_000);
    } catch (e) {
      st.error = errText(e);
    }
  }
  try {
    for (let i = 0; i < count; i++) {
      const ch = String.fromCharCode(97 + (i % 26));
      for (const t of targets) {
        const st = state.get(t.side);
        if (!st?.s || st.error) continue;
        try {
          const t0 = process.hrtime.bigint();
          const echoed = st.s.expect(ch, 5000);
          st.s.p.write(ch);
          await echoed;
          st.ms.push(Number(process.hrtime.bigint() - t0) / 1e6);
        } catch (e) {
          st.error = errText(e);
        }
      }
    }
  } finally {
    for (const st of state.values()) st.s?.p.kill();
  }
  const outcome = (side: Side): SideOutcome => {
    const st = state.get(side);
    if (!st) return { samples: [], summary: null, error: 'not run' };
    if (st.error) log(`  latency ${side} failed: ${st.error}`);
    return {
      samples: st.ms,
      summary: st.error
        ? null
        : { value: percentile(st.ms, 99), p50: median(st.ms), max: Math.max(...st.ms) },
      error: st.error,
    };
  };
  log(`  latency: ${count} round trips each`);
  return [
    scenarioResult('interactive echo p99', 'ms', 'lower', {
      gateway: outcome('gateway'),
      sshd: outcome('sshd'),
      ...(state.has('base') ? { base: outcome('base') } : {}),
    }),
  ];
}
