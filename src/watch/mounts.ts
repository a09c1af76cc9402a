import { readFile } from 'node:fs/promises';

export interface MountWatchDeps {
  /** Called when the mount table changed since the last look. */
  onChange(): void;
  intervalMs?: number;
  /** The mount table (default /proc/self/mountinfo); when it cannot be read, nothing is watched. */
  file?: string;
}

/**
 * A partition mounted over an existing directory produces no inotify event in that directory, so
 * the mount table is looked at every couple of seconds: a change triggers a pass, which works out
 * again what to watch and reads the sources (a glob such as /mnt/*\/corral/profiles gains a match).
 */
export class MountWatch {
  private last: string | undefined;
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly deps: MountWatchDeps) {}

  async start(): Promise<void> {
    this.last = await this.read();
    if (this.last === undefined) return;
    this.timer = setInterval(() => void this.check(), this.deps.intervalMs ?? 2000);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  private async check(): Promise<void> {
    const now = await this.read();
    // An empty read is no mount table (a system always has /): not a change.
    if (!now || now === this.last) return;
    this.last = now;
    if (this.timer) this.deps.onChange();
  }

  private read(): Promise<string | undefined> {
    return readFile(this.deps.file ?? '/proc/self/mountinfo', 'utf8').catch(() => undefined);
  }
}
