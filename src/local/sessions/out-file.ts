// An append-only output file of a recording, optionally gzip-compressed, with backpressure: `write`
// returns false when the caller should wait for `drained()` (the gRPC handler pauses its stream).
import { createWriteStream, mkdirSync, type WriteStream } from 'node:fs';
import { dirname } from 'node:path';
import { createGzip, type Gzip } from 'node:zlib';

export class OutFile {
  private readonly file: WriteStream;
  private readonly gz: Gzip | undefined;
  private failed: Error | undefined;
  private closed: Promise<void> | undefined;
  /** Bytes handed to `write` (before compression). */
  written = 0;

  /** `append`: continue an existing file (pcapng shared by several streams). */
  constructor(
    readonly path: string,
    opts: { gzip?: boolean; append?: boolean } = {},
  ) {
    mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
    this.file = createWriteStream(path, { flags: opts.append ? 'a' : 'wx', mode: 0o600 });
    this.file.on('error', (e) => (this.failed ??= e));
    if (opts.gzip) {
      this.gz = createGzip();
      this.gz.on('error', (e) => (this.failed ??= e));
      this.gz.pipe(this.file);
    }
  }

  get error(): Error | undefined {
    return this.failed;
  }

  write(data: Buffer | string): boolean {
    if (this.failed || this.closed) return true;
    this.written += typeof data === 'string' ? Buffer.byteLength(data) : data.length;
    return (this.gz ?? this.file).write(data);
  }

  /** Resolves when the writer can take more (or failed: the error is then in `error`). */
  drained(): Promise<void> {
    const w = this.gz ?? this.file;
    if (!w.writableNeedDrain || this.failed) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const done = () => {
        w.off('drain', done);
        w.off('error', done);
        this.file.off('close', done);
        resolve();
      };
      w.on('drain', done);
      w.on('error', done);
      this.file.on('close', done);
    });
  }

  /** Flushes and closes; never rejects (a failure is in `error`). */
  close(): Promise<void> {
    return (this.closed ??= new Promise<void>((resolve) => {
      if (this.file.closed || this.file.destroyed) return resolve();
      this.file.once('close', () => resolve());
      (this.gz ?? this.file).end();
      if (this.failed) this.file.destroy();
    }));
  }
}
