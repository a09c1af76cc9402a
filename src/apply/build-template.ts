/**
 * One build, end to end, with its provenance: room on disk (the floor), the base fetched into the
 * cache, a manifest written before the guest is defined (its digest goes into the guest's
 * metadata), the build run, then promotion or — on failure — the guest destroyed (or set aside by
 * `--keep-failed`) with its console log and manifest kept. The live template is never touched.
 */
import { hostname } from 'node:os';
import { HostError } from '../errors.js';
import { failedName } from '../hypervisor/names.js';
import type { Action } from '../plan/types.js';
import type { CompiledProfile } from '../sources/view.js';
import type { Manifest } from '../state/build-records.js';
import { corralVersion } from '../util/version.js';
import type { ApplyDeps } from './apply-deps.js';
import { runBuild } from './run-build.js';

type BuildAction = Extract<Action, { action: 'build' }>;

/** Returns a failure message for a build that failed (recorded and backed off); undefined on success. */
export async function buildTemplate(
  action: BuildAction,
  profile: CompiledProfile,
  deps: ApplyDeps,
): Promise<string | undefined> {
  const hv = deps.hypervisor;
  const started = deps.clock();
  const manifest = newManifest(action, profile, deps, started);
  const fail = async (reason: string, extra: Partial<Manifest['result']> = {}): Promise<string> => {
    await finish(manifest, deps, { verdict: 'failed', reason, ...extra });
    const entry = await deps.backoff.recordFailure(action.profile, reason, deps.clock());
    deps.log.warn({ failures: entry.failures, until: entry.until }, 'backing off');
    return reason;
  };

  let baseImage = '';
  let release = () => {};
  try {
    await deps.floor?.check(`build ${action.guest}`);
    if (deps.bases) {
      baseImage = await deps.bases.ensure(profile.base, profile.baseVersion, profile.dir);
      release = deps.bases.hold(profile.baseVersion);
      const cached = await deps.bases.describe(profile.baseVersion);
      manifest.base.cached = baseImage;
      if (cached) manifest.base.digest = cached.digest;
    }
  } catch (error) {
    return fail(`base not ready: ${(error as Error).message}`);
  }

  let result;
  try {
    const digest = await deps.records?.write(manifest);
    result = await runBuild(profile, action.guest, action.gen, deps, {
      baseImage,
      ...(digest ? { manifest: digest } : {}),
      onDefined: release,
    });
  } catch (error) {
    if (error instanceof HostError) {
      // The host failed, not the guest: no verdict is invented, and the profile waits before
      // trying again (a host back-off) so a broken host is not hammered.
      const consoleLog = await keepConsole(action.guest, action.template, deps);
      await hv.destroy(action.guest).catch(() => undefined);
      await finish(manifest, deps, {
        verdict: 'failed',
        reason: `host problem: ${error.message}`,
        ...(consoleLog ? { consoleLog } : {}),
      });
      const entry = await deps.backoff.recordFailure(action.profile, error.message, deps.clock(), 'host');
      deps.log.error({ error: error.message, until: entry.until }, 'host problem; backing off');
      return `host problem: ${error.message}`;
    }
    // Not a verdict (the guest never started): the next pass discards whatever was defined.
    await finish(manifest, deps, { verdict: 'failed', reason: (error as Error).message });
    throw error;
  } finally {
    release();
  }
  if (result.abandoned) {
    await finish(manifest, deps, { verdict: 'failed', reason: 'abandoned at shutdown' });
    return 'abandoned at shutdown; the next pass discards it';
  }
  const backingChain = await hv.diskChain(action.guest).catch(() => []);
  const consoleLog = await keepConsole(action.guest, action.template, deps);
  const ended = { backingChain, ...(consoleLog ? { consoleLog } : {}) };
  if (result.verdict.ok) {
    await hv.promote(action.guest, action.template);
    await deps.backoff.recordSuccess(action.profile);
    await finish(manifest, deps, { verdict: 'ok', ...ended });
    return undefined;
  }
  let keptAs: string | undefined;
  if (deps.keepFailed) {
    keptAs = failedName(prefixOf(action.guest), action.profile, action.gen);
    await hv.setAside(action.guest, keptAs);
  } else {
    await hv.destroy(action.guest);
  }
  const reason = result.verdict.reason;
  await fail(reason, { ...ended, ...(keptAs ? { keptAs } : {}) });
  return `${reason}${consoleLog ? ` (console log: ${consoleLog})` : ''}${keptAs ? ` (kept as ${keptAs})` : ''}`;
}

/** An orphaned rebuild the planner discards or promotes: its record says how it ended. */
export async function recordOrphan(action: Action, verdict: 'ok' | 'failed', deps: ApplyDeps): Promise<void> {
  if (!deps.records) return;
  const template = action.action === 'promote' ? action.template : templateOfRebuild(action.guest);
  const consoleLog = verdict === 'failed' ? await keepConsole(action.guest, template, deps) : undefined;
  const manifest = await deps.records.read(template);
  if (!manifest || manifest.result.verdict !== 'running') return;
  await finish(manifest, deps, {
    verdict,
    ...(verdict === 'failed' ? { reason: action.reason } : {}),
    ...(consoleLog ? { consoleLog } : {}),
  });
}

function templateOfRebuild(rebuild: string): string {
  return rebuild.replace(/-rebuild-/, '-template-');
}

/** Prefixes hold no '-' (schemas/config.schema.json), so the guest name's first part is it. */
function prefixOf(guest: string): string {
  return guest.slice(0, guest.indexOf('-'));
}

async function keepConsole(guest: string, template: string, deps: ApplyDeps): Promise<string | undefined> {
  if (!deps.records) return undefined;
  try {
    const text = await deps.hypervisor.consoleLog(guest);
    return text === undefined ? undefined : await deps.records.saveConsole(template, text);
  } catch (error) {
    deps.log.warn({ error: (error as Error).message }, 'could not keep the console log of a build');
    return undefined;
  }
}

async function finish(manifest: Manifest, deps: ApplyDeps, result: Manifest['result']): Promise<void> {
  if (!deps.records) return;
  const finishedAt = deps.clock();
  manifest.result = {
    ...result,
    finishedAt: finishedAt.toISOString(),
    durationMs: finishedAt.getTime() - Date.parse(manifest.startedAt),
  };
  try {
    await deps.records.write(manifest);
  } catch (error) {
    deps.log.warn({ error: (error as Error).message }, 'could not write the build manifest');
  }
}

function newManifest(action: BuildAction, profile: CompiledProfile, deps: ApplyDeps, started: Date): Manifest {
  const b = profile.base;
  return {
    format_version: 1,
    template: action.template,
    rebuild: action.guest,
    gen: action.gen,
    profile: {
      name: profile.name,
      source: profile.source,
      dir: profile.dir,
      file: profile.file,
      ...(profile.overrides ? { overrides: profile.overrides } : {}),
      generation: deps.generation ?? 0,
      inputsHash: profile.inputsHash,
    },
    reason: action.reason,
    inputs: profile.inputs,
    base: {
      kind: b.kind,
      ...(b.kind === 'file'
        ? { file: b.file }
        : b.kind === 'oci' || b.kind === 'template'
          ? { reference: b.ref }
          : { url: b.url }),
      ...(b.kind === 'checksums' ? { checksums: b.checksums } : {}),
      version: profile.baseVersion,
    },
    guest: {
      cpus: profile.guest.cpus,
      memoryMiB: profile.guest.memoryMiB,
      ...(profile.guest.diskBytes ? { diskBytes: profile.guest.diskBytes } : {}),
    },
    host: hostname(),
    corral: { version: corralVersion() },
    startedAt: started.toISOString(),
    result: { verdict: 'running' },
  };
}
