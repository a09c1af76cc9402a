/**
 * The one matcher for source paths and globs (a source `glob:` such as `/mnt/*\/corral/profiles`),
 * used both to list the sources (enumerate.ts) and to decide which file events matter
 * (watch/targets.ts), so the two can never disagree. Matching is per path segment with picomatch
 * (`*`, `?`, `[...]`, `{a,b}`; no `**`), hidden entries are never matched by a wildcard, and a
 * segment picomatch does not read as a glob (an unbalanced `[`) is taken literally.
 */
import { sep } from 'node:path';
import picomatch from 'picomatch';

export function segmentsOf(path: string): string[] {
  return path.split(sep).filter((s) => s !== '');
}

export function isWildSegment(segment: string): boolean {
  return picomatch.scan(segment).isGlob;
}

export class PathPattern {
  readonly segments: readonly string[];
  private readonly matchers: readonly ((name: string) => boolean)[];

  constructor(readonly text: string) {
    this.segments = segmentsOf(text);
    this.matchers = this.segments.map((segment) => {
      if (!isWildSegment(segment)) return (name: string) => name === segment;
      const match = picomatch(segment, { dot: false });
      return (name: string) => match(name);
    });
  }

  get isGlob(): boolean {
    return this.segments.some(isWildSegment);
  }

  /** Does `name` match the segment at `index`? */
  matchesSegment(index: number, name: string): boolean {
    return this.matchers[index]?.(name) ?? false;
  }

  /** The longest wildcard-free prefix of the pattern, and the segments after it. */
  staticRoot(): { root: string; rest: string[] } {
    const first = this.segments.findIndex(isWildSegment);
    const cut = first === -1 ? this.segments.length : first;
    return { root: sep + this.segments.slice(0, cut).join(sep), rest: this.segments.slice(cut) };
  }

  /** True when `path` is on the way to something the pattern matches, or inside such a match. */
  isOnPattern(path: string): boolean {
    const parts = segmentsOf(path);
    const n = Math.min(parts.length, this.segments.length);
    for (let i = 0; i < n; i++) if (!this.matchesSegment(i, parts[i] as string)) return false;
    return true;
  }

  /** True when `dir` itself is matched by the pattern (a source dir the pattern names). */
  matches(dir: string): boolean {
    return segmentsOf(dir).length === this.segments.length && this.isOnPattern(dir);
  }
}
