import { readFile, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { ConfigError } from '../../errors.js';
import { writeFileAtomic } from '../../util/atomic-write.js';
import { MemoryHypervisor, type BuildOutcome, type MemoryState } from './memory-hypervisor.js';

const OUTCOMES: BuildOutcome[] = ['succeed', 'fail', 'hang', 'crash'];

/**
 * The memory backend as the CLI uses it: guests persisted in the state dir so successive runs see
 * the same guests. Build outcomes come from $CORRAL_MEMORY_OUTCOMES (`tiny=fail,other=hang`).
 * Runners' seed files are files under `memory-seeds/<runner>/` (0600), never in the JSON file;
 * $CORRAL_MEMORY_SCRIPTS=host lets `corral gitlab run` run job scripts on this host (tests and
 * demos only: host-scripts.ts).
 */
export async function openMemoryHypervisor(opts: {
  stateDir: string;
  prefix: string;
  clock: () => Date;
  env: NodeJS.ProcessEnv;
  /** `plan`, `status`, `--dry-run`: look at the guests (builds may finish in memory) but never save. */
  readOnly?: boolean;
}): Promise<MemoryHypervisor> {
  const file = join(opts.stateDir, 'memory-hypervisor.json');
  let initial: MemoryState | undefined;
  try {
    initial = JSON.parse(await readFile(file, 'utf8')) as MemoryState;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT')
      throw new ConfigError(`cannot read memory hypervisor state ${file}: ${(error as Error).message}`);
  }
  const outcomes = parseOutcomes(opts.env.CORRAL_MEMORY_OUTCOMES ?? '');
  const buildMs = Number(opts.env.CORRAL_MEMORY_BUILD_MS ?? 0);
  if (!opts.readOnly) await mkdir(opts.stateDir, { recursive: true });
  const scripts = opts.env.CORRAL_MEMORY_SCRIPTS ?? '';
  if (scripts !== '' && scripts !== 'host')
    throw new ConfigError(
      `CORRAL_MEMORY_SCRIPTS: "${scripts}" is not "host" (run job scripts on this host; tests only)`,
    );
  return new MemoryHypervisor({
    prefix: opts.prefix,
    seedsDir: join(opts.stateDir, 'memory-seeds'),
    ...(scripts === 'host' ? { hostScriptsDir: join(opts.stateDir, 'memory-guests') } : {}),
    clock: opts.clock,
    outcome: (profile) => outcomes.get(profile) ?? outcomes.get('*') ?? 'succeed',
    buildMs: Number.isFinite(buildMs) ? buildMs : 0,
    ...(opts.readOnly ? {} : { save: (state: MemoryState) => writeFileAtomic(file, JSON.stringify(state)) }),
    ...(initial ? { initial } : {}),
  });
}

export function parseOutcomes(spec: string): Map<string, BuildOutcome> {
  const map = new Map<string, BuildOutcome>();
  for (const part of spec
    .split(',')
    .map((p) => p.trim())
    .filter(Boolean)) {
    const [profile, outcome] = part.split('=');
    if (!profile || !OUTCOMES.includes(outcome as BuildOutcome)) {
      throw new ConfigError(`CORRAL_MEMORY_OUTCOMES: "${part}" is not <profile>=${OUTCOMES.join('|')}`);
    }
    map.set(profile, outcome as BuildOutcome);
  }
  return map;
}
