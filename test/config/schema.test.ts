import { readFileSync } from 'node:fs';
import { Ajv2020 } from 'ajv/dist/2020.js';
import { describe, expect, it } from 'vitest';
import { createValidators, schemaPath, schemaProblems, type SchemaName } from '../../src/config/schema.js';

describe('schemas', () => {
  // createValidators() skips meta-schema validation for start-up time; this is where it happens.
  it.each<SchemaName>(['profile', 'config'])('%s.schema.json is a valid JSON Schema 2020-12', (name) => {
    const ajv = new Ajv2020({ strict: true, allowUnionTypes: true });
    const schema = JSON.parse(readFileSync(schemaPath(name), 'utf8')) as object;
    expect(ajv.validateSchema(schema), JSON.stringify(ajv.errors)).toBe(true);
    expect((schema as { additionalProperties?: unknown }).additionalProperties).toBe(false);
  });

  it('reports every problem with a pointer and a plain message', () => {
    const { profile } = createValidators();
    expect(profile({ runner: 1, base: { file: 3 }, labels: { 'bad key!': 'x' } })).toBe(false);
    const problems = schemaProblems('/p.yaml', profile.errors);
    const lines = problems.map((p) => `${p.where}: ${p.message}`);
    expect(lines).toEqual(
      expect.arrayContaining([
        '/: missing required key "runners"',
        '/runner: unknown key "runner"',
        '/base/file: must be string',
      ]),
    );
    expect(problems.every((p) => p.file === '/p.yaml' && p.severity === 'error')).toBe(true);
  });
});
