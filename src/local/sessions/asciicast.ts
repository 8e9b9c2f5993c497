// asciicast v2 writer (node-notes §13): a JSON header line, then `[seconds, code, text]` lines with
// absolute times since the start. Bytes are decoded with a streaming UTF-8 decoder per direction so a
// character split across two chunks survives; `asciinema cat`/`play` 2.x and asciinema-player read it.
import { StringDecoder } from 'node:string_decoder';
import type { OutFile } from './out-file.js';

export interface CastHeader {
  width: number;
  height: number;
  /** Unix seconds of the start. */
  timestamp: number;
  command?: string;
  title?: string;
}

export class CastWriter {
  private readonly decoders = { o: new StringDecoder('utf8'), i: new StringDecoder('utf8') };
  private last = 0;
  events = 0;

  constructor(
    private readonly out: OutFile,
    header: CastHeader,
  ) {
    const h: Record<string, unknown> = {
      version: 2,
      width: header.width > 0 ? header.width : 80,
      height: header.height > 0 ? header.height : 24,
      timestamp: header.timestamp,
    };
    if (header.command) h.command = header.command;
    if (header.title) h.title = header.title;
    h.env = { TERM: 'xterm-256color' };
    out.write(`${JSON.stringify(h)}\n`);
  }

  /** Output (`o`) or input (`i`) bytes at `ms` since the start; false = wait for the file to drain. */
  data(ms: number, code: 'o' | 'i', bytes: Buffer): boolean {
    const text = this.decoders[code].write(bytes);
    return text === '' ? true : this.event(ms, code, text);
  }

  resize(ms: number, cols: number, rows: number): boolean {
    return this.event(ms, 'r', `${cols}x${rows}`);
  }

  marker(ms: number, label: string): boolean {
    return this.event(ms, 'm', label);
  }

  /** Emits what the decoders still hold (an incomplete character becomes U+FFFD). */
  finish(ms: number): void {
    for (const code of ['o', 'i'] as const) {
      const rest = this.decoders[code].end();
      if (rest) this.event(ms, code, rest);
    }
  }

  private event(ms: number, code: string, text: string): boolean {
    // Times never go backwards in a cast (players rely on it).
    this.last = Math.max(this.last, ms);
    this.events++;
    return this.out.write(`${JSON.stringify([Number((this.last / 1000).toFixed(6)), code, text])}\n`);
  }
}
