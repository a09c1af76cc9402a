import type { Command } from '../command.js';
import { compileCommand } from './compile.js';
import { sourcesCommand } from './sources.js';
import { validateCommand } from './validate.js';

export function commands(): Command[] {
  return [validateCommand, sourcesCommand, compileCommand];
}
