/**
 * Chunk-sized buffers handed back and forth between a transfer's workers. Reusing them matters:
 * a fresh 32 MiB buffer costs a page fault per 4 KiB the first time each page is touched, which
 * on the 2-core machine cost a pull about a third of its time in the kernel.
 */
export class BufferPool {
  private readonly free: Buffer[] = [];

  constructor(readonly size: number) {}

  /** A buffer of `n` bytes: a view of a pooled one when it fits, else a buffer of its own. */
  take(n = this.size): Buffer {
    if (n > this.size) return Buffer.allocUnsafe(n);
    return (this.free.pop() ?? Buffer.allocUnsafeSlow(this.size)).subarray(0, n);
  }

  /** Returns a buffer from take() (a view's whole pooled buffer goes back). */
  give(b: Buffer): void {
    if (b.buffer.byteLength === this.size && b.byteOffset === 0) this.free.push(Buffer.from(b.buffer, 0, this.size));
  }
}
