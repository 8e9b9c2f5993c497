// Optional bearer-token check for every RPC (unary and streaming, deliberately stricter than the
// reference, whose interceptor checks unary calls only). The token file is re-read when its mtime or
// size changes, so a rotated token takes effect without a restart.
import { statSync, readFileSync } from 'node:fs';
import { timingSafeEqual } from 'node:crypto';
import type { Metadata } from '@grpc/grpc-js';

export class TokenCheck {
  private token: Buffer | undefined;
  private stamp = '';

  constructor(private readonly file: string) {}

  /** undefined when the call may proceed, else the reason (sent with UNAUTHENTICATED). */
  check(md: Metadata): string | undefined {
    const expected = this.current();
    if (!expected) return 'the agent cannot read its token file';
    const header = md.get('authorization')[0];
    const text =
      typeof header === 'string' ? header : header instanceof Buffer ? header.toString('utf8') : '';
    if (!text) return 'missing authorization metadata';
    const m = /^Bearer\s+(.+)$/i.exec(text.trim());
    if (!m?.[1]) return 'authorization metadata is not a bearer token';
    const got = Buffer.from(m[1].trim());
    if (got.length !== expected.length || !timingSafeEqual(got, expected)) return 'invalid bearer token';
    return undefined;
  }

  private current(): Buffer | undefined {
    try {
      const st = statSync(this.file);
      const stamp = `${st.mtimeMs}:${st.size}:${st.ino}`;
      if (stamp !== this.stamp || !this.token) {
        const t = readFileSync(this.file, 'utf8').trim();
        this.token = t ? Buffer.from(t) : undefined;
        this.stamp = stamp;
      }
    } catch {
      this.token = undefined;
      this.stamp = '';
    }
    return this.token;
  }
}
