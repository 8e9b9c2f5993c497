// Exec channel throughput: `head -c N /dev/zero | ssh … 'cat >/dev/null'` and `ssh … 'head -c N /dev/zero' >/dev/null`.
import { checkOk, runProcess } from '../proc.js';
import type { Target } from '../target.js';
import { transferTimeoutMs, type Transfer } from './throughput.js';

/** Upload: the pipe runs in sh so no byte passes through this process; wall time is the pipeline's. */
export function execUpload(bytes: number): Transfer {
  return async (t: Target) => {
    const ssh = ['ssh', ...t.sshArgs(), t.destination, 'cat >/dev/null'];
    const r = await runProcess('sh', ['-c', `head -c ${bytes} /dev/zero | "$@"`, 'sh', ...ssh], {
      timeoutMs: transferTimeoutMs(bytes),
    });
    return checkOk(`exec upload via ${t.side}`, r).ms;
  };
}

/** Download: ssh's stdout is /dev/null itself. */
export function execDownload(bytes: number): Transfer {
  return async (t: Target) => {
    const r = await runProcess('ssh', [...t.sshArgs(), t.destination, `head -c ${bytes} /dev/zero`], {
      timeoutMs: transferTimeoutMs(bytes),
      stdout: 'ignore',
    });
    return checkOk(`exec download via ${t.side}`, r).ms;
  };
}
