import type { Command } from '../command.js';
import { compileCommand } from './compile.js';
import { planCommand } from './plan.js';
import { reconcileCommand } from './reconcile.js';
import { sourcesCommand } from './sources.js';
import { statusCommand } from './status.js';
import { validateCommand } from './validate.js';
import { watchCommand } from './watch.js';

export function commands(): Command[] {
  return [validateCommand, sourcesCommand, compileCommand, planCommand, reconcileCommand, watchCommand, statusCommand];
}
