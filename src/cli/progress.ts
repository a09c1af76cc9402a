/**
 * A one-line progress display on stderr: redrawn in place on a terminal (at most 10 times a
 * second), and on anything else printed only at every quarter, so logs stay short.
 */
import type { Output } from './command.js';

export interface ProgressLine {
  update(fraction: number, text: string): void;
  done(text: string): void;
}

export function progressLine(io: Output, tty: boolean, label: string): ProgressLine {
  let lastDraw = 0;
  let lastQuarter = -1;
  let drawn = false;
  return {
    update(fraction, text) {
      const now = Date.now();
      if (tty) {
        if (now - lastDraw < 100 && fraction < 1) return;
        lastDraw = now;
        const width = 24;
        const filled = Math.round(Math.min(1, fraction) * width);
        io.err(`\r${label} [${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${text}\x1b[K`);
        drawn = true;
        return;
      }
      const quarter = Math.floor(fraction * 4);
      if (quarter > lastQuarter && quarter < 4) {
        lastQuarter = quarter;
        io.err(`${label}: ${text}\n`);
      }
    },
    done(text) {
      io.err(`${tty && drawn ? '\r\x1b[K' : ''}${label}: ${text}\n`);
    },
  };
}
