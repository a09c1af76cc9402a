/**
 * Guest naming. The role of a guest comes from its name, so the rename rebuild → template is the
 * single commit point of a promotion (docs/design.md, "Naming").
 */
import { PROFILE_NAME } from '../sources/profile-name.js';

/** `failed`: a failed rebuild set aside by `--keep-failed` for debugging; never promoted, collected by gc. */
export type Role = 'rebuild' | 'template' | 'runner' | 'failed';

export { PROFILE_NAME } from '../sources/profile-name.js';
/** `<UTC timestamp>-<8 hex of inputs hash>`: sortable and unique. */
export const GEN = /^\d{8}T\d{6}Z-[0-9a-f]{8}$/;

export type ParsedName =
  | { role: 'rebuild' | 'template' | 'failed'; profile: string; gen: string }
  | { role: 'runner'; profile: string; index: number };

export function rebuildName(prefix: string, profile: string, gen: string): string {
  return `${prefix}-rebuild-${profile}@${gen}`;
}

export function templateName(prefix: string, profile: string, gen: string): string {
  return `${prefix}-template-${profile}@${gen}`;
}

export function failedName(prefix: string, profile: string, gen: string): string {
  return `${prefix}-failed-${profile}@${gen}`;
}

export function runnerName(prefix: string, profile: string, index: number): string {
  return `${prefix}-runner-${profile}.${index}`;
}

export function makeGen(now: Date, inputsHash: string): string {
  const stamp = now
    .toISOString()
    .replace(/[-:]/g, '')
    .replace(/\.\d+Z$/, 'Z');
  return `${stamp}-${inputsHash.replace(/^sha256:/, '').slice(0, 8)}`;
}

export function hasPrefix(prefix: string, name: string): boolean {
  return name.startsWith(`${prefix}-`);
}

/** Parses a guest name; undefined when it does not follow corral's scheme. */
export function parseName(prefix: string, name: string): ParsedName | undefined {
  if (!hasPrefix(prefix, name)) return undefined;
  const rest = name.slice(prefix.length + 1);
  const build = /^(rebuild|template|failed)-(.+)@(.+)$/.exec(rest);
  if (build) {
    const [, role, profile, gen] = build as unknown as [string, 'rebuild' | 'template' | 'failed', string, string];
    if (!PROFILE_NAME.test(profile) || !GEN.test(gen)) return undefined;
    return { role, profile, gen };
  }
  const runner = /^runner-(.+)\.(\d{1,6})$/.exec(rest);
  if (runner) {
    const [, profile, index] = runner as unknown as [string, string, string];
    if (!PROFILE_NAME.test(profile)) return undefined;
    return { role: 'runner', profile, index: Number(index) };
  }
  return undefined;
}
