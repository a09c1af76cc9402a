import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { ScopeReport } from './runner-ci.js';
import { writeFileAtomic } from '../util/atomic-write.js';

/** What the last pass learnt from the CI systems, for `status` (which never calls them itself). */
export interface CiState {
  updatedAt: string;
  scopes: ScopeReport[];
}

const file = (stateDir: string) => join(stateDir, 'ci-state.json');

export async function writeCiState(stateDir: string, state: CiState): Promise<void> {
  await writeFileAtomic(file(stateDir), `${JSON.stringify(state, null, 2)}\n`);
}

export async function readCiState(stateDir: string): Promise<CiState | undefined> {
  try {
    return JSON.parse(await readFile(file(stateDir), 'utf8')) as CiState;
  } catch {
    return undefined;
  }
}
