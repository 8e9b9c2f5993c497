// Rate-limited logging for failures that can repeat per connection or per chunk (an unreachable
// session service must not flood the log): per message key, `burst` lines per interval, then the
// number of suppressed lines is reported on the next line that gets through.
import type { Logger } from './log.js';

export interface RateLimitOptions {
  /** Window length; default 60 s. */
  intervalMs?: number;
  /** Lines per key and window; default 5. */
  burst?: number;
  /** Keys remembered at once (oldest forgotten first); default 256. */
  maxKeys?: number;
  now?: () => number;
}

type Level = 'debug' | 'info' | 'warn' | 'error';

export class RateLimitedLog {
  private readonly windows = new Map<string, { start: number; count: number; suppressed: number }>();
  private readonly intervalMs: number;
  private readonly burst: number;
  private readonly maxKeys: number;
  private readonly now: () => number;

  constructor(
    private readonly log: Logger,
    o: RateLimitOptions = {},
  ) {
    this.intervalMs = o.intervalMs ?? 60_000;
    this.burst = o.burst ?? 5;
    this.maxKeys = o.maxKeys ?? 256;
    this.now = o.now ?? Date.now;
  }

  debug(obj: Record<string, unknown>, msg: string, logger?: Logger): void {
    this.emit('debug', obj, msg, logger);
  }
  info(obj: Record<string, unknown>, msg: string, logger?: Logger): void {
    this.emit('info', obj, msg, logger);
  }
  warn(obj: Record<string, unknown>, msg: string, logger?: Logger): void {
    this.emit('warn', obj, msg, logger);
  }
  error(obj: Record<string, unknown>, msg: string, logger?: Logger): void {
    this.emit('error', obj, msg, logger);
  }

  /** `logger` (e.g. a connection's child logger) is used for the line; the key is the message. */
  private emit(level: Level, obj: Record<string, unknown>, msg: string, logger = this.log): void {
    const t = this.now();
    let w = this.windows.get(msg);
    if (!w || t - w.start >= this.intervalMs) {
      const suppressed = w?.suppressed ?? 0;
      this.windows.delete(msg);
      if (this.windows.size >= this.maxKeys) {
        const oldest = this.windows.keys().next().value;
        if (oldest !== undefined) this.windows.delete(oldest);
      }
      w = { start: t, count: 0, suppressed };
      this.windows.set(msg, w);
    }
    if (w.count >= this.burst) {
      w.suppressed++;
      return;
    }
    w.count++;
    const extra = w.suppressed > 0 ? { suppressed: w.suppressed } : {};
    w.suppressed = 0;
    logger[level]({ ...obj, ...extra }, msg);
  }
}
