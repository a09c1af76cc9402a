/**
 * Starts the longest test files first. vitest orders files by their last recorded duration, but a
 * clean clone (CI) has no record and falls back to file size, which put the debian-12 e2e (minutes
 * of TCG boots, a small file) last: the suite then took the sum instead of the longest of its
 * two workers.
 */
import { BaseSequencer, type TestSpecification } from 'vitest/node';

const SLOWEST = ['debian-12.e2e', 'lifecycle-stock.e2e', 'lifecycle.e2e', 'ci.e2e', 'oci.e2e'];

const rank = (spec: TestSpecification): number => {
  const i = SLOWEST.findIndex((name) => spec.moduleId.endsWith(`${name}.test.ts`));
  return i < 0 ? SLOWEST.length : i;
};

export class SlowFirstSequencer extends BaseSequencer {
  override async sort(files: TestSpecification[]): Promise<TestSpecification[]> {
    const sorted = await super.sort(files);
    // Array.prototype.sort is stable: the base order holds within each rank.
    return [...sorted].sort((a, b) => rank(a) - rank(b));
  }
}
