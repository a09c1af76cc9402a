import type { Command } from '../command.js';
import { compileCommand } from './compile.js';
import { gcCommand } from './gc.js';
import { historyCommand } from './history.js';
import { inspectCommand } from './inspect.js';
import { logsCommand } from './logs.js';
import { gitlabCommand } from './gitlab.js';
import { loginCommand, logoutCommand } from './login.js';
import { planCommand } from './plan.js';
import { pullCommand } from './pull.js';
import { pushCommand } from './push.js';
import { reconcileCommand } from './reconcile.js';
import { serveCommand } from './serve.js';
import { sourcesCommand } from './sources.js';
import { statusCommand } from './status.js';
import { validateCommand } from './validate.js';
import { watchCommand } from './watch.js';

export function commands(): Command[] {
  return [
    validateCommand,
    sourcesCommand,
    compileCommand,
    planCommand,
    reconcileCommand,
    watchCommand,
    statusCommand,
    inspectCommand,
    historyCommand,
    logsCommand,
    gcCommand,
    gitlabCommand,
    serveCommand,
    pushCommand,
    pullCommand,
    loginCommand,
    logoutCommand,
  ];
}
