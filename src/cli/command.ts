import type { Logger } from 'pino';
import type { ParseArgsConfig } from 'node:util';
import type { HostConfig } from '../config/host-config.js';
import type { Validators } from '../config/schema.js';

export interface Output {
  out(text: string): void;
  err(text: string): void;
  /** Raw bytes to stdout (a job's output streamed as it comes); falls back to out(). */
  write?(chunk: Buffer): void;
}

/** What every command gets: parsed options, the loaded host config, and the outside world. */
export interface CommandContext {
  args: Record<string, string | boolean | undefined>;
  positionals: string[];
  json: boolean;
  config: HostConfig;
  validators: Validators;
  log: Logger;
  io: Output;
  env: NodeJS.ProcessEnv;
  now: () => Date;
  /**
   * SIGTERM/SIGINT ask long-running commands to stop. With `secondSignalExits`, a second one exits
   * at once (128 + the signal's number) instead of waiting for the first to finish.
   */
  signals: {
    onStop(handler: () => void, opts?: { secondSignalExits?: boolean }): void;
    onReload(handler: () => void): void;
  };
}

export interface Command {
  name: string;
  summary: string;
  usage: string;
  /** Help text for the command's own options (global options are added by the frame). */
  optionsHelp: string;
  options: NonNullable<ParseArgsConfig['options']>;
  /** Positional arguments the command takes (`inspect <name>`); default none. */
  positionals?: number;
  /** The fewest positional arguments the command needs (default 0). */
  minPositionals?: number;
  /** Returns the exit code. */
  run(ctx: CommandContext): Promise<number>;
}

export const EXIT = { ok: 0, error: 1, changes: 2, busy: 75 } as const;
