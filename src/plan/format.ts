import { oneLine } from '../util/escape.js';
import type { Action, Plan, Requeue } from './types.js';

const SYMBOL: Record<Action['action'], string> = {
  build: '+',
  pull: '+',
  publish: '~',
  'create-runner': '+',
  promote: '~',
  'replace-runner': '~',
  discard: '-',
  'destroy-runner': '-',
  'retire-template': '-',
};

export function planToJson(plan: Plan, generation: number | null): object {
  return {
    format_version: 1,
    generation,
    actions: plan.actions,
    waits: plan.waits,
    unrecognized: plan.unrecognized,
    requeueAt: plan.requeue?.at ?? null,
    requeueReason: plan.requeue?.reason ?? null,
  };
}

/** `retry at 14:05:10, in 40 s` (UTC, like every time corral prints). */
export function formatRequeue(requeue: Requeue, now: Date): string {
  const at = new Date(requeue.at);
  const seconds = Math.max(0, Math.ceil((at.getTime() - now.getTime()) / 1000));
  const within =
    seconds < 120
      ? `${seconds} s`
      : seconds < 7200
        ? `${Math.round(seconds / 60)} min`
        : `${Math.round(seconds / 3600)} h`;
  return `retry at ${at.toISOString().slice(11, 19)}, in ${within}`;
}

/** Terraform-like lines: `+` creates, `~` changes, `-` removes; `=` says why a profile waits. */
export function formatPlan(plan: Plan, now: Date): string {
  const lines: string[] = [];
  for (const a of plan.actions) {
    const target =
      a.action === 'replace-runner' && a.replacement !== a.guest
        ? `${a.guest} → ${a.replacement}`
        : a.action === 'promote'
          ? `${a.guest} → ${a.template}`
          : a.guest;
    const from =
      a.action === 'create-runner' || a.action === 'replace-runner'
        ? ` (from ${a.template})`
        : a.action === 'pull'
          ? ` (from ${a.reference})`
          : a.action === 'publish'
            ? ` (to ${a.reference})`
            : '';
    lines.push(`  ${SYMBOL[a.action]} ${target}  ${a.action}: ${a.reason}${from}`);
  }
  for (const w of plan.waits) lines.push(`  = ${w.profile}: ${w.reason}`);
  for (const u of plan.unrecognized) lines.push(`  ? ${oneLine(u.name)}: ${oneLine(u.reason)} (left alone)`);
  if (plan.requeue) lines.push(`  @ ${formatRequeue(plan.requeue, now)} (${plan.requeue.reason})`);
  const counts = new Map<string, number>();
  for (const a of plan.actions) counts.set(a.action, (counts.get(a.action) ?? 0) + 1);
  const summary =
    plan.actions.length === 0
      ? 'No changes: guests match the compiled view.'
      : `Plan: ${[...counts].map(([k, n]) => `${n} ${k}`).join(', ')}.`;
  return `${lines.join('\n')}${lines.length ? '\n' : ''}${summary}\n`;
}
