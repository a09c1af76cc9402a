import { appendFile, mkdir, readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';

export interface Event {
  time: string;
  action: string;
  guest: string;
  profile: string;
  reason: string;
  ok: boolean;
  error?: string;
  durationMs: number;
}

/** Append-only history of actions and results, one JSON object per line. */
export class EventLog {
  readonly file: string;

  constructor(stateDir: string) {
    this.file = join(stateDir, 'events.jsonl');
  }

  async append(event: Event): Promise<void> {
    await mkdir(dirname(this.file), { recursive: true });
    // One write per line with O_APPEND: concurrent appends never interleave within a line.
    await appendFile(this.file, `${JSON.stringify(event)}\n`);
  }

  /** The most recent events, oldest first; a torn last line (crash mid-write) is skipped. */
  async recent(limit = 1000): Promise<Event[]> {
    const text = await readFile(this.file, 'utf8').catch(() => '');
    const events: Event[] = [];
    for (const line of text.split('\n').slice(-limit - 1)) {
      if (!line) continue;
      try {
        events.push(JSON.parse(line) as Event);
      } catch {
        // ignore a partial line
      }
    }
    return events.slice(-limit);
  }
}
