import assert from 'node:assert/strict';
import { describe, it, type TestContext } from 'node:test';

import {
  createProgressWriter,
  normaliseWriterOptions,
  nullProgress,
  type ProvisionEventLike,
  type WriterOptions,
} from '../../src/gateway/progress.js';

const OFF: WriterOptions = {
  showProvisionInfo: false,
  showPulse: false,
  showPercentage: false,
  showErrors: false,
  showSystemErrors: false,
};

function sink(): { out: string[]; write(text: string): void; text(): string } {
  const out: string[] = [];
  return { out, write: (t) => out.push(t), text: () => out.join('') };
}

function ev(type: string, status: string, message = '', objectName = 'ws-1'): ProvisionEventLike {
  return { type, status, message, objectName, timestamp: '2024-05-01T10:00:00Z' };
}

function mockTimers(t: TestContext): void {
  t.mock.timers.enable({ apis: ['setInterval', 'setTimeout'] });
}

describe('normaliseWriterOptions', () => {
  it('provision info turns pulse off; no pulse turns percentage off', () => {
    const all = { ...OFF, showProvisionInfo: true, showPulse: true, showPercentage: true };
    assert.deepEqual(normaliseWriterOptions(all), { ...all, showPulse: false, showPercentage: false });
    const pct = { ...OFF, showPercentage: true };
    assert.equal(normaliseWriterOptions(pct).showPercentage, false);
    const both = { ...OFF, showPulse: true, showPercentage: true };
    assert.deepEqual(normaliseWriterOptions(both), both);
  });
});

describe('pulse', () => {
  it('spins every 100 ms and ends with ✓', (t) => {
    mockTimers(t);
    const s = sink();
    const w = createProgressWriter(s, { ...OFF, showPulse: true });
    w.startProvisioning();
    assert.deepEqual(s.out, ['\r⠋ Starting workspace...']);
    t.mock.timers.tick(99);
    assert.equal(s.out.length, 1);
    t.mock.timers.tick(1);
    assert.deepEqual(s.out, ['\r⠋ Starting workspace...', '\r⠙ Starting workspace...']);
    t.mock.timers.tick(900); // frames 3..10, then the cycle restarts
    t.mock.timers.tick(100);
    assert.deepEqual(
      s.out.map((x) => x.slice(1, 2)),
      ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏', '⠋', '⠙'].slice(0, s.out.length),
    );
    assert.equal(s.out.length, 12);
    w.endProvisioning(false);
    assert.equal(s.out.at(-1), '\r✓ Starting workspace...\r\n');
    const n = s.out.length;
    t.mock.timers.tick(1000);
    assert.equal(s.out.length, n, 'the spinner stops');
  });

  it('shows the image-pulling text while Pulling, and ✗ on failure', (t) => {
    mockTimers(t);
    const s = sink();
    const w = createProgressWriter(s, { ...OFF, showPulse: true });
    w.startProvisioning();
    w.event(ev('status', 'Pulling', 'pulling image'));
    t.mock.timers.tick(100);
    assert.equal(s.out.at(-1), '\r⠙ Starting workspace (image pulling)...');
    w.event(ev('status', 'Starting'));
    t.mock.timers.tick(100);
    // Shorter than the previous line: padded with spaces so no old characters remain.
    assert.equal(s.out.at(-1), '\r⠹ Starting workspace...' + ' '.repeat(16));
    w.endProvisioning(true);
    assert.equal(s.out.at(-1), '\r✗ Starting workspace...' + ' '.repeat(16) + '\r\n');
  });

  it('percentage: 0% first, follows progress events, hidden while pulling', (t) => {
    mockTimers(t);
    const s = sink();
    const w = createProgressWriter(s, { ...OFF, showPulse: true, showPercentage: true });
    w.startProvisioning();
    assert.equal(s.out.at(-1), '\r⠋ Starting workspace... 0%');
    w.event(ev('progress', '42'));
    t.mock.timers.tick(100);
    assert.equal(s.out.at(-1), '\r⠙ Starting workspace... 42%');
    w.event(ev('progress', 'garbage'));
    t.mock.timers.tick(100);
    assert.equal(s.out.at(-1), '\r⠹ Starting workspace... 42%');
    w.event(ev('status', 'Pulling'));
    t.mock.timers.tick(100);
    assert.equal(s.out.at(-1), '\r⠸ Starting workspace (image pulling)...');
    w.event(ev('status', 'Starting'));
    w.event(ev('progress', '100'));
    w.endProvisioning(false);
    assert.equal(s.out.at(-1), '\r✓ Starting workspace... 100%' + ' '.repeat(11) + '\r\n');
    w.close();
  });

  it('with provision info on, pulse is off', (t) => {
    mockTimers(t);
    const s = sink();
    const w = createProgressWriter(s, {
      ...OFF,
      showProvisionInfo: true,
      showPulse: true,
      showPercentage: true,
    });
    w.startProvisioning();
    t.mock.timers.tick(500);
    w.endProvisioning(false);
    assert.equal(s.text(), 'Starting workspace...\r\n');
  });

  it('close() stops the timer and silences the writer', (t) => {
    mockTimers(t);
    const s = sink();
    const w = createProgressWriter(s, { ...OFF, showPulse: true, showErrors: true });
    w.startProvisioning();
    w.close();
    t.mock.timers.tick(1000);
    w.userError('x');
    w.connecting('ws');
    w.endProvisioning(false);
    assert.deepEqual(s.out, ['\r⠋ Starting workspace...']);
  });

  it('a sink that throws closes the writer instead of crashing', (t) => {
    mockTimers(t);
    let calls = 0;
    const w = createProgressWriter(
      {
        write: () => {
          calls++;
          throw new Error('channel closed');
        },
      },
      { ...OFF, showPulse: true },
    );
    w.startProvisioning();
    t.mock.timers.tick(1000);
    w.connecting('ws');
    assert.equal(calls, 1);
  });
});

describe('provision info', () => {
  it('prints the start line, event and status lines, sanitised', () => {
    const s = sink();
    const w = createProgressWriter(s, { ...OFF, showProvisionInfo: true });
    w.startProvisioning();
    w.event(ev('event', '', 'Pulled image\r\n  "dev:1"', 'pod/ws'));
    w.event(ev('status', 'Running', 'ready', 'ws-1'));
    w.event(ev('progress', '50'));
    w.event(ev('event', '', 'x', 'a-very-long-object-name'));
    w.endProvisioning(false);
    assert.equal(
      s.text(),
      'Starting workspace...\r\n' +
        '[2024-05-01T10:00:00Z] [pod/ws      ] Pulled image "dev:1"\r\n' +
        '[2024-05-01T10:00:00Z] [ws-1] Running: ready\r\n' +
        '[2024-05-01T10:00:00Z] [a-very-long-object-name] x\r\n',
    );
  });

  it('prints nothing when off', () => {
    const s = sink();
    const w = createProgressWriter(s, OFF);
    w.startProvisioning();
    w.event(ev('event', '', 'hello'));
    w.endProvisioning(true);
    assert.equal(s.text(), '');
  });
});

describe('errors and connecting', () => {
  it('user and system errors follow their flags, as single sanitised lines', () => {
    const s = sink();
    const w = createProgressWriter(s, { ...OFF, showErrors: true });
    w.userError('workspace not found:\npod=ws1,\tns=a  ');
    w.systemError('token issue');
    assert.equal(s.text(), 'workspace not found: pod=ws1, ns=a\r\n');

    const s2 = sink();
    const w2 = createProgressWriter(s2, { ...OFF, showSystemErrors: true });
    w2.userError('hidden');
    w2.systemError('The workspace is unreachable.\r\nPlease retry in a moment.\u001b[2J');
    assert.equal(s2.text(), 'The workspace is unreachable. Please retry in a moment.[2J\r\n');
  });

  it('connecting is always written', () => {
    const s = sink();
    createProgressWriter(s, OFF).connecting('ws-1.team-a');
    assert.equal(s.text(), 'Connecting to the workspace at ws-1.team-a...\r\n');
  });

  it('an error while the pulse line is open starts a new line', (t) => {
    mockTimers(t);
    const s = sink();
    const w = createProgressWriter(s, { ...OFF, showPulse: true, showErrors: true });
    w.startProvisioning();
    w.userError('boom');
    t.mock.timers.tick(500);
    assert.equal(s.text(), '\r⠋ Starting workspace...\r\nboom\r\n');
  });

  it('nullProgress writes nothing and never throws', () => {
    nullProgress.startProvisioning();
    nullProgress.event(ev('status', 'Running'));
    nullProgress.endProvisioning(true);
    nullProgress.userError('x');
    nullProgress.systemError('x');
    nullProgress.connecting('x');
    nullProgress.close();
    assert.equal(typeof nullProgress.close, 'function');
  });
});
