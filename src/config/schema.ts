import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { packageRoot } from '../util/package-root.js';
import { Ajv2020, type ErrorObject, type ValidateFunction } from 'ajv/dist/2020.js';
import type { Problem } from '../errors.js';

export type SchemaName = 'profile' | 'config';

/** Compiled validators, built once per process run by whoever needs them (no module-level cache). */
export interface Validators {
  profile: ValidateFunction;
  config: ValidateFunction;
}

export function schemaPath(name: SchemaName): string {
  return join(packageRoot(), 'schemas', `${name}.schema.json`);
}

export function createValidators(): Validators {
  // validateSchema: false skips compiling the 2020-12 meta-schema on every CLI start (~2/3 of the
  // cost here); our two schemas are checked against it by test/config/schema.test.ts instead.
  const ajv = new Ajv2020({ allErrors: true, strict: true, allowUnionTypes: true, validateSchema: false });
  const load = (name: SchemaName) => ajv.compile(JSON.parse(readFileSync(schemaPath(name), 'utf8')) as object);
  return { profile: load('profile'), config: load('config') };
}

export function schemaProblems(file: string, errors: ErrorObject[] | null | undefined): Problem[] {
  return (errors ?? []).map((e) => ({ file, severity: 'error' as const, ...describe(e) }));
}

function describe(e: ErrorObject): { where: string; message: string } {
  const where = e.instancePath || '/';
  switch (e.keyword) {
    case 'additionalProperties': {
      const key = (e.params as { additionalProperty: string }).additionalProperty;
      return { where: `${e.instancePath}/${key}`, message: `unknown key "${key}"` };
    }
    case 'required':
      return { where, message: `missing required key "${(e.params as { missingProperty: string }).missingProperty}"` };
    case 'type':
      return {
        where,
        message: `must be ${(e.params as { type: string | string[] }).type.toString().replace(',', ' or ')}`,
      };
    case 'enum':
      return {
        where,
        message: `must be one of ${(e.params as { allowedValues: unknown[] }).allowedValues.map((v) => JSON.stringify(v)).join(', ')}`,
      };
    case 'minProperties':
    case 'maxProperties':
      if (e.instancePath === '/ci') return { where, message: 'needs exactly one of "github", "gitlab" or "hook"' };
      return { where, message: e.message ?? e.keyword };
    default:
      return { where, message: e.message ?? e.keyword };
  }
}
