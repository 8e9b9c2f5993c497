// Fixed-size byte ring: the last N bytes of a PTY shell's output, replayed on re-attach (§5.8).
export class ByteRing {
  private readonly buf: Buffer;
  private start = 0;
  private size = 0;

  constructor(readonly capacity = 256 * 1024) {
    this.buf = Buffer.alloc(capacity);
  }

  get length(): number {
    return this.size;
  }

  push(data: Buffer): void {
    const cap = this.capacity;
    if (data.length >= cap) {
      data.copy(this.buf, 0, data.length - cap);
      this.start = 0;
      this.size = cap;
      return;
    }
    let end = (this.start + this.size) % cap;
    const first = Math.min(data.length, cap - end);
    data.copy(this.buf, end, 0, first);
    data.copy(this.buf, 0, first);
    end = (end + data.length) % cap;
    const overflow = Math.max(0, this.size + data.length - cap);
    this.size = Math.min(cap, this.size + data.length);
    this.start = (this.start + overflow) % cap;
  }

  /** A copy of the buffered bytes, oldest first. */
  contents(): Buffer {
    const cap = this.capacity;
    if (this.start + this.size <= cap)
      return Buffer.from(this.buf.subarray(this.start, this.start + this.size));
    return Buffer.concat([
      this.buf.subarray(this.start),
      this.buf.subarray(0, (this.start + this.size) % cap),
    ]);
  }
}
