// `session` channels: per-channel state and request dispatch (reference-behaviour §13.1, §23.b).
import type { AcceptConnection, Session } from 'ssh2';
import { errText } from '../../ops/log.js';
import type { GatewayConnection } from '../connection.js';
import { validEnvName } from '../env.js';
import { completeSessionClose } from '../ssh2-shims/index.js';
import { SessionState } from './common.js';
import { runExec } from './exec.js';
import { runShell } from './shell.js';

const DEFAULT_COLS = 80;
const DEFAULT_ROWS = 24;

export function handleSession(conn: GatewayConnection, accept: AcceptConnection<Session>): void {
  const session = accept();
  completeSessionClose(conn.ssh, session);
  const id = conn.ids.next('sh');
  const state = new SessionState(id, conn.log.child({ chan: id }));
  const { log } = state;
  const fail = (what: string) => (e: unknown) => log.error({ err: errText(e) }, `${what} failed`);

  session.on('pty', (ok, _no, info) => {
    state.pty = { term: info.term, cols: info.cols || DEFAULT_COLS, rows: info.rows || DEFAULT_ROWS };
    setEnv(state, 'TERM', info.term, true);
    conn.ops.add('pt');
    ok?.();
  });
  session.on('env', (ok, no, info) => {
    if (!validEnvName(info.key)) return no?.();
    // A TERM from env is dropped when pty-req already set it.
    setEnv(state, info.key, info.val, false);
    ok?.();
  });
  session.on('window-change', (ok, _no, info) => {
    if (state.pty) {
      state.pty.cols = info.cols;
      state.pty.rows = info.rows;
    }
    state.running?.resize(info.cols, info.rows);
    ok?.();
  });
  session.on('signal', (ok, no, info) => {
    if (state.running?.signal(info.name)) ok?.();
    else no?.();
  });
  session.on('auth-agent', (ok) => {
    state.agentRequested = true;
    conn.ops.add('af');
    ok?.();
  });
  session.on('x11', (_ok, no) => no?.());

  session.on('shell', (ok, no) => {
    if (state.started) return no?.();
    state.started = true;
    conn.ops.add('sh');
    runShell(conn, state, ok()).catch(fail('shell'));
  });
  session.on('exec', (ok, no, info) => {
    if (state.started) return no?.();
    state.started = true;
    conn.ops.add('ex');
    log.info({ command: info.command.slice(0, 200) }, 'exec requested');
    runExec(conn, state, ok(), { type: 'exec', command: info.command }).catch(fail('exec'));
  });
  session.on('subsystem', (ok, no, info) => {
    if (state.started || info.name !== 'sftp') {
      log.info({ subsystem: info.name }, 'subsystem refused');
      return no?.();
    }
    state.started = true;
    conn.ops.add('sf');
    runExec(conn, state, ok(), { type: 'sftp' }).catch(fail('sftp'));
  });
  session.on('close', () => log.debug('session channel closed'));
}

function setEnv(state: SessionState, key: string, val: string, override: boolean): void {
  const i = state.env.findIndex(([k]) => k === key);
  if (i < 0) state.env.push([key, val]);
  else if (override) state.env[i] = [key, val];
}
