import { plan } from '../src/plan/plan.js';
import type { ObservedGuest } from '../src/hypervisor/hypervisor.js';
import {
  HASH_A,
  HASH_B,
  NOW,
  aPolicy,
  aProfile,
  aRunner,
  aTemplate,
  genAt,
  someFacts,
} from '../test/builders/guests.js';
import { timeMs, type BenchResult } from './types.js';

/** plan() over 10,000 profiles and 100,000 guests, half of the profiles needing a rebuild and rollover. */
export async function benchPlan(): Promise<BenchResult> {
  const profiles = [];
  const guests: ObservedGuest[] = [];
  const gen = genAt(60);
  for (let i = 0; i < 10_000; i++) {
    const name = `p${i}`;
    profiles.push(
      aProfile(name)
        .runners(9)
        .withHash(i % 2 ? HASH_A : HASH_B)
        .build(),
    );
    guests.push(aTemplate().forProfile(name).atGen(gen).build());
    for (let r = 1; r <= 9; r++) guests.push(aRunner().forProfile(name).index_(r).onTemplate(gen).build());
  }
  const input = { profiles, observed: { guests, unrecognized: [] }, now: NOW, policy: aPolicy(), facts: someFacts() };
  plan(input); // warm-up
  const runs = [];
  for (let i = 0; i < 3; i++) runs.push(await timeMs(() => plan(input)));
  const best = Math.min(...runs.map((r) => r.ms));
  return {
    name: 'plan() 10,000 profiles / 100,000 guests',
    figures: { 'best ms': Math.round(best), actions: runs[0]!.value.actions.length },
    target: { text: '< 1000 ms', met: best < 1000 },
  };
}
