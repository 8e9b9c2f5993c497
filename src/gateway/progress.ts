// Workspace progress output on shell channels (reference-behaviour.md §11).
export interface WriterOptions {
  showProvisionInfo: boolean;
  showPulse: boolean;
  showPercentage: boolean;
  showErrors: boolean;
  showSystemErrors: boolean;
}

export interface ProgressSink {
  write(text: string): void;
}

export interface ProvisionEventLike {
  type: string;
  timestamp: string;
  objectName: string;
  status: string;
  message: string;
}

export interface ProgressWriter {
  startProvisioning(): void;
  event(e: ProvisionEventLike): void;
  endProvisioning(failed: boolean): void;
  userError(msg: string): void;
  systemError(msg: string): void;
  connecting(serverName: string): void;
  /** Stops timers; later calls write nothing. */
  close(): void;
}

export const SPINNER_FRAMES = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'] as const;
export const SPINNER_INTERVAL_MS = 100;
const TEXT = 'Starting workspace...';
const TEXT_PULLING = 'Starting workspace (image pulling)...';

/** Pulse is off when provision info is on; percentage only works with pulse. */
export function normaliseWriterOptions(opts: WriterOptions): WriterOptions {
  const showPulse = opts.showPulse && !opts.showProvisionInfo;
  return { ...opts, showPulse, showPercentage: opts.showPercentage && showPulse };
}

/**
 * One line for the terminal: CR/LF (and any whitespace run) become one space. Other control characters
 * (ESC, BEL, …) are dropped so a message cannot drive the user's terminal.
 */
export function sanitiseLine(s: string): string {
  return (
    s
      // eslint-disable-next-line no-control-regex
      .replace(/[\u0000-\u0008\u000e-\u001f\u007f]/g, '')
      .replace(/\s+/g, ' ')
      .trim()
  );
}

export function createProgressWriter(sink: ProgressSink, options: WriterOptions): ProgressWriter {
  const opts = normaliseWriterOptions(options);
  let closed = false;
  let timer: ReturnType<typeof setInterval> | undefined;
  let pulseActive = false;
  let frame = 0;
  let pulling = false;
  let percent = 0;
  let lastWidth = 0;

  const write = (text: string): void => {
    if (closed) return;
    try {
      sink.write(text);
    } catch {
      // The channel went away: nothing more can be shown.
      stop();
      closed = true;
    }
  };

  const stop = (): void => {
    if (timer !== undefined) clearInterval(timer);
    timer = undefined;
  };

  const pulseLine = (mark: string): string => {
    const pct = opts.showPercentage && !pulling ? ` ${percent}%` : '';
    const body = `${mark} ${pulling ? TEXT_PULLING : TEXT}${pct}`;
    const width = [...body].length;
    // The line is only ever overwritten with `\r`; pad when it got shorter so no old characters remain.
    const pad = width < lastWidth ? ' '.repeat(lastWidth - width) : '';
    lastWidth = Math.max(width, lastWidth);
    return `\r${body}${pad}`;
  };

  const drawFrame = (): void => write(pulseLine(SPINNER_FRAMES[frame % SPINNER_FRAMES.length] ?? ''));

  // An error line while the pulse line is still open starts on a fresh line.
  const line = (msg: string): void => {
    if (pulseActive) {
      stop();
      pulseActive = false;
      write('\r\n');
    }
    write(`${sanitiseLine(msg)}\r\n`);
  };

  return {
    startProvisioning(): void {
      if (closed || pulseActive) return;
      if (opts.showProvisionInfo) write(`${TEXT}\r\n`);
      if (!opts.showPulse) return;
      pulseActive = true;
      frame = 0;
      pulling = false;
      percent = 0;
      lastWidth = 0;
      drawFrame();
      timer = setInterval(() => {
        frame = (frame + 1) % SPINNER_FRAMES.length;
        drawFrame();
      }, SPINNER_INTERVAL_MS);
    },

    event(e: ProvisionEventLike): void {
      if (closed) return;
      if (opts.showProvisionInfo) {
        const ts = sanitiseLine(e.timestamp);
        const name = sanitiseLine(e.objectName);
        if (e.type === 'event') write(`[${ts}] [${name.padEnd(12)}] ${sanitiseLine(e.message)}\r\n`);
        else if (e.type === 'status') {
          write(`[${ts}] [${name}] ${sanitiseLine(e.status)}: ${sanitiseLine(e.message)}\r\n`);
        }
        return;
      }
      if (!pulseActive) return;
      if (e.type === 'status') {
        if (e.status === 'Pulling') pulling = true;
        else if (e.status === 'Starting') pulling = false;
      } else if (e.type === 'progress') {
        const n = /^\s*\d{1,3}\s*$/.test(e.status) ? Number(e.status) : NaN;
        if (Number.isInteger(n)) percent = Math.min(100, n);
      }
    },

    endProvisioning(failed: boolean): void {
      if (closed || !pulseActive) return;
      stop();
      pulseActive = false;
      write(`${pulseLine(failed ? '✗' : '✓')}\r\n`);
    },

    userError(msg: string): void {
      if (!closed && opts.showErrors) line(msg);
    },

    systemError(msg: string): void {
      if (!closed && opts.showSystemErrors) line(msg);
    },

    connecting(serverName: string): void {
      if (!closed) line(`Connecting to the workspace at ${serverName}...`);
    },

    close(): void {
      stop();
      pulseActive = false;
      closed = true;
    },
  };
}

/** For exec, sftp and forwarding channels: progress is never shown there. */
export const nullProgress: ProgressWriter = {
  startProvisioning: () => undefined,
  event: () => undefined,
  endProvisioning: () => undefined,
  userError: () => undefined,
  systemError: () => undefined,
  connecting: () => undefined,
  close: () => undefined,
};
