/**
 * Chunk-sized buffers handed back and forth between a transfer's workers. Reusing them matters:
 * a fresh 32 MiB buffer costs a page fault per 4 KiB the first time each page is touched, which
 * on the 2-core machine cost a pull about a third of its time in the kernel.
 *
 * Each pooled buffer is the memory of a WebAssembly.Memory, because that is the one allocation
 * Node offers that starts on a page boundary (V8 maps it whole); an ArrayBuffer from malloc does
 * not. Page-aligned buffers let a pull write chunks with O_DIRECT (pull.ts). Where such a memory
 * cannot be had (an address-space limit: V8 reserves guard pages around it), the pool falls back
 * to ordinary buffers, which are written through the page cache.
 */
export const PAGE = 4096;
const WASM_PAGE = 64 * 1024;

/** The one piece of the WebAssembly JS API used here (the project's TypeScript lib declares none). */
interface WasmGlobal {
  WebAssembly: { Memory: new (descriptor: { initial: number }) => { buffer: ArrayBuffer } };
}

export class BufferPool {
  private readonly free: Buffer[] = [];
  private readonly aligned = new WeakSet<ArrayBufferLike>();
  private wasmFailed = false;

  constructor(readonly size: number) {}

  /** A buffer of `n` bytes: a view of a pooled one when it fits, else a buffer of its own. */
  take(n = this.size): Buffer {
    if (n > this.size) return Buffer.allocUnsafe(n);
    return (this.free.pop() ?? this.allocate()).subarray(0, n);
  }

  /** Returns a buffer from take() (a view's whole pooled buffer goes back). */
  give(b: Buffer): void {
    if (b.byteOffset === 0 && (this.aligned.has(b.buffer) || b.buffer.byteLength === this.size))
      this.free.push(Buffer.from(b.buffer, 0, this.size));
  }

  /** Whether `b` starts on a page boundary of a pooled buffer (so O_DIRECT may write it). */
  isPageAligned(b: Buffer): boolean {
    return this.aligned.has(b.buffer) && b.byteOffset % PAGE === 0;
  }

  private allocate(): Buffer {
    if (!this.wasmFailed) {
      try {
        const memory = new (globalThis as unknown as WasmGlobal).WebAssembly.Memory({
          initial: Math.ceil(this.size / WASM_PAGE),
        });
        this.aligned.add(memory.buffer);
        return Buffer.from(memory.buffer, 0, this.size);
      } catch {
        this.wasmFailed = true;
      }
    }
    return Buffer.allocUnsafeSlow(this.size);
  }
}
