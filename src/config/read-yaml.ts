import { readFile, stat } from 'node:fs/promises';
import { parseDocument, LineCounter } from 'yaml';
import type { Problem } from '../errors.js';

/** Profiles and configs are small; a huge file is a mistake (or an attack), not a profile. */
export const MAX_YAML_BYTES = 1024 * 1024;

export type YamlResult = { ok: true; value: Record<string, unknown> } | { ok: false; problems: Problem[] };

/** Reads a YAML file that must hold a mapping; every failure is a Problem naming the file. */
export async function readYamlMapping(file: string, opts: { allowPipe?: boolean } = {}): Promise<YamlResult> {
  const fail = (message: string, where?: string): YamlResult => ({
    ok: false,
    problems: [{ file, severity: 'error', message, ...(where ? { where } : {}) }],
  });
  let text: string;
  try {
    const info = await stat(file);
    // The host config may come through a pipe (`--config /dev/stdin`); a profile may not (it would hang a compile).
    const pipe = opts.allowPipe === true && (info.isFIFO() || info.isCharacterDevice() || info.isSocket());
    if (!info.isFile() && !pipe) return fail('not a regular file');
    if (info.size > MAX_YAML_BYTES) {
      return fail(`file is ${(info.size / 1048576).toFixed(1)} MiB; the limit is ${MAX_YAML_BYTES / 1048576} MiB`);
    }
    text = await readFile(file, 'utf8');
    if (Buffer.byteLength(text) > MAX_YAML_BYTES) return fail(`more than ${MAX_YAML_BYTES / 1048576} MiB`);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    return fail(code === 'ENOENT' ? 'no such file' : `cannot read (${code ?? String(error)})`);
  }
  return parseYamlMapping(file, text);
}

export function parseYamlMapping(file: string, text: string): YamlResult {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, prettyErrors: false, uniqueKeys: true });
  if (doc.errors.length > 0) {
    return {
      ok: false,
      problems: doc.errors.map((e) => {
        const pos = lineCounter.linePos(e.pos[0]);
        return { file, where: `${pos.line}:${pos.col}`, severity: 'error' as const, message: firstLine(e.message) };
      }),
    };
  }
  if (doc.contents === null) return { ok: false, problems: [{ file, severity: 'error', message: 'file is empty' }] };
  let value: unknown;
  try {
    value = doc.toJS({ maxAliasCount: 100 });
  } catch (error) {
    // e.g. an alias bomb ("Excessive alias count …"): a problem in this file, not a crash of the whole run.
    return { ok: false, problems: [{ file, severity: 'error', message: firstLine((error as Error).message) }] };
  }
  // `---` or `~` alone: as empty as an empty file.
  if (value === null || value === undefined)
    return { ok: false, problems: [{ file, severity: 'error', message: 'file is empty' }] };
  if (typeof value !== 'object' || Array.isArray(value)) {
    const kind = Array.isArray(value) ? 'a list' : `a ${typeof value}`;
    return {
      ok: false,
      problems: [{ file, where: '/', severity: 'error', message: `must be a mapping of keys, not ${kind}` }],
    };
  }
  return { ok: true, value: value as Record<string, unknown> };
}

function firstLine(message: string): string {
  return message.split('\n')[0]?.replace(/ at line \d+, column \d+:?$/, '') ?? message;
}
