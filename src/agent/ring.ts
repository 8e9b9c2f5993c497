// The last N bytes of a PTY shell's output, replayed on re-attach (§5.8). Storage grows with the
// output actually seen: an idle shell holds a prompt, not a pre-allocated 256 KiB (1000 idle shells
// cost 256 MB that way, and every later fork of the agent copied those page tables).
const COMPACT_AT = 64;

export class ByteRing {
  private chunks: Buffer[] = [];
  private size = 0;

  constructor(readonly capacity = 256 * 1024) {}

  get length(): number {
    return this.size;
  }

  push(data: Buffer): void {
    const cap = this.capacity;
    if (data.length === 0) return;
    if (data.length >= cap) {
      this.chunks = [Buffer.from(data.subarray(data.length - cap))];
      this.size = cap;
      return;
    }
    // A copy: the caller's buffer may be a view into a larger one, or reused.
    this.chunks.push(Buffer.from(data));
    this.size += data.length;
    while (this.size > cap) {
      const first = this.chunks[0] as Buffer;
      const excess = this.size - cap;
      if (first.length <= excess) {
        this.chunks.shift();
        this.size -= first.length;
      } else {
        this.chunks[0] = first.subarray(excess);
        this.size -= excess;
      }
    }
    // Keystroke echoes arrive a byte at a time: keep the chunk list short.
    if (this.chunks.length > COMPACT_AT) this.chunks = [Buffer.concat(this.chunks, this.size)];
  }

  /** A copy of the buffered bytes, oldest first. */
  contents(): Buffer {
    return Buffer.concat(this.chunks, this.size);
  }
}
