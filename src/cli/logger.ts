import { pino, destination, type Logger, type Level } from 'pino';
import pretty from 'pino-pretty';

/** Logs go to stderr (data goes to stdout); human-readable only when a person is watching. */
export function createLogger(level: Level, opts: { tty: boolean }): Logger {
  if (opts.tty) {
    return pino({ level }, pretty({ destination: 2, sync: true, ignore: 'pid,hostname', translateTime: 'HH:MM:ss' }));
  }
  return pino({ level, base: undefined }, destination({ dest: 2, sync: true }));
}
