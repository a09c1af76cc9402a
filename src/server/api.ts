import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import type { HostConfig } from '../config/host-config.js';
import type { Hypervisor } from '../hypervisor/hypervisor.js';
import { PROFILE_NAME, parseName, type Role } from '../hypervisor/names.js';
import { RebuildRequests } from '../state/rebuild-requests.js';
import type { FeedEvent, LiveFeed } from './feed.js';
import { HttpError, authorize, readJsonBody, segment, sendJson } from './http.js';
import type { Metrics } from './metrics.js';
import { buildHistory, buildLog, manifestOf, runnersOf, templatesOf, type Snapshot } from './read-model.js';
import type { PassTrigger } from './trigger.js';

export interface ApiDeps {
  config: HostConfig;
  log: Logger;
  snapshot(): Promise<Snapshot>;
  hypervisor(): Promise<Hypervisor>;
  feed: LiveFeed;
  metrics: Metrics;
  trigger: PassTrigger;
  clock: () => Date;
  /** How often a followed console log is looked at. */
  followMs: number;
}

type Handler = (req: IncomingMessage, res: ServerResponse, params: string[], url: URL) => Promise<void>;

interface Route {
  method: 'GET' | 'POST';
  /** Path segments after /api/v1; ':x' matches one segment. */
  pattern: string[];
  handler: Handler;
}

/** Builds the /api/v1 router. Each handler throws HttpError for a 4xx; the caller turns anything else into a 500. */
export function apiRoutes(deps: ApiDeps): (req: IncomingMessage, res: ServerResponse, url: URL) => Promise<boolean> {
  const { config } = deps;
  const publicSnapshot = (s: Snapshot) => {
    const { internal: _internal, ...rest } = s;
    return rest;
  };
  const profileName = (raw: string): string => {
    const name = segment(raw, 'the profile name');
    if (!PROFILE_NAME.test(name)) throw new HttpError(400, 'invalid-name', `"${name}" is not a profile name`);
    return name;
  };
  const guestName = (raw: string, role: Role): string => {
    const name = segment(raw, `the ${role} name`);
    if (parseName(config.prefix, name)?.role !== role)
      throw new HttpError(400, 'invalid-name', `"${name}" is not a ${role} guest name (${config.prefix}-${role}-…)`);
    return name;
  };
  const knownProfile = (snapshot: Snapshot, name: string) => {
    const profile = snapshot.profiles.find((p) => p.name === name);
    if (!profile) throw new HttpError(404, 'unknown-profile', `no profile named "${name}" in the compiled view`);
    return profile;
  };
  const findBuild = (snapshot: Snapshot, name: string) => {
    const profile = parseName(config.prefix, name)?.profile ?? '';
    const build = buildHistory(
      profile,
      snapshot.internal.observed.guests.filter((g) => g.profile === profile),
      snapshot.internal.events,
      deps.clock(),
    ).find((b) => b.name === name);
    if (!build) throw new HttpError(404, 'unknown-build', `no build named "${name}" is running or recorded`);
    return build;
  };

  const routes: Route[] = [
    {
      method: 'GET',
      pattern: [],
      handler: async (_req, res) =>
        sendJson(res, 200, {
          api: 'corral',
          version: 1,
          endpoints: routes.map((r) => `${r.method} /api/v1/${r.pattern.join('/')}`.replace(/\/$/, '')),
        }),
    },
    {
      method: 'GET',
      pattern: ['status'],
      handler: async (_req, res) => sendJson(res, 200, publicSnapshot(await deps.snapshot())),
    },
    {
      method: 'GET',
      pattern: ['profiles'],
      handler: async (_req, res) => sendJson(res, 200, { profiles: (await deps.snapshot()).profiles }),
    },
    {
      method: 'GET',
      pattern: ['profiles', ':name'],
      handler: async (_req, res, [raw]) => {
        const name = profileName(raw as string);
        const snapshot = await deps.snapshot();
        const summary = knownProfile(snapshot, name);
        const compiled = snapshot.internal.view?.profiles.find((p) => p.name === name);
        sendJson(res, 200, {
          ...summary,
          compiled,
          templates: templatesOf(snapshot, name),
          runnerGuests: runnersOf(snapshot, name),
          builds: buildHistory(
            name,
            snapshot.internal.observed.guests.filter((g) => g.profile === name),
            snapshot.internal.events,
            deps.clock(),
          ),
        });
      },
    },
    {
      method: 'GET',
      pattern: ['profiles', ':name', 'builds'],
      handler: async (_req, res, [raw]) => {
        const name = profileName(raw as string);
        const snapshot = await deps.snapshot();
        knownProfile(snapshot, name);
        sendJson(res, 200, {
          builds: buildHistory(
            name,
            snapshot.internal.observed.guests.filter((g) => g.profile === name),
            snapshot.internal.events,
            deps.clock(),
          ),
        });
      },
    },
    {
      method: 'POST',
      pattern: ['profiles', ':name', 'rebuild'],
      handler: async (req, res, [raw]) => {
        await authorize(req, config.server.tokenFile);
        await readJsonBody(req);
        const name = profileName(raw as string);
        knownProfile(await deps.snapshot(), name);
        const at = deps.clock();
        await new RebuildRequests(config.stateDir).request(name, at);
        const triggered = await deps.trigger.reconcile(`rebuild ${name}`);
        publish(deps.feed, {
          type: 'request',
          at: at.toISOString(),
          kind: 'rebuild',
          profile: name,
          via: triggered.via,
        });
        sendJson(res, 202, { accepted: true, profile: name, requestedAt: at.toISOString(), via: triggered.via });
      },
    },
    {
      method: 'POST',
      pattern: ['reconcile'],
      handler: async (req, res) => {
        await authorize(req, config.server.tokenFile);
        await readJsonBody(req);
        const at = deps.clock().toISOString();
        const triggered = await deps.trigger.reconcile('api');
        publish(deps.feed, { type: 'request', at, kind: 'reconcile', via: triggered.via });
        sendJson(res, 202, { accepted: true, requestedAt: at, via: triggered.via });
      },
    },
    {
      method: 'GET',
      pattern: ['templates'],
      handler: async (_req, res) => sendJson(res, 200, { templates: templatesOf(await deps.snapshot()) }),
    },
    {
      method: 'GET',
      pattern: ['templates', ':name'],
      handler: async (_req, res, [raw]) => {
        const name = guestName(raw as string, 'template');
        const snapshot = await deps.snapshot();
        const template = templatesOf(snapshot).find((t) => t.name === name);
        if (!template) throw new HttpError(404, 'unknown-template', `no template named "${name}"`);
        sendJson(res, 200, { ...template, manifest: (await manifestOf(config, snapshot, name)) ?? null });
      },
    },
    {
      method: 'GET',
      pattern: ['runners'],
      handler: async (_req, res) => sendJson(res, 200, { runners: runnersOf(await deps.snapshot()) }),
    },
    {
      method: 'GET',
      pattern: ['runners', ':name'],
      handler: async (_req, res, [raw]) => {
        const name = guestName(raw as string, 'runner');
        const runner = runnersOf(await deps.snapshot()).find((r) => r.name === name);
        if (!runner) throw new HttpError(404, 'unknown-runner', `no runner named "${name}"`);
        sendJson(res, 200, runner);
      },
    },
    {
      method: 'GET',
      pattern: ['runners', ':name', 'log'],
      handler: async (req, res, [raw], url) => {
        const name = guestName(raw as string, 'runner');
        const hypervisor = await deps.hypervisor();
        const log = await hypervisor.consoleLog(name);
        if (log === undefined) throw new HttpError(404, 'no-log', `no console log for "${name}"`);
        await streamLog(req, res, url, {
          first: log,
          read: async () => (await deps.hypervisor()).consoleLog(name),
          running: async () => isRunning(await deps.hypervisor(), name),
          everyMs: deps.followMs,
        });
      },
    },
    {
      method: 'GET',
      pattern: ['builds'],
      handler: async (_req, res) => {
        const snapshot = await deps.snapshot();
        sendJson(res, 200, {
          builds: snapshot.profiles
            .flatMap((p) =>
              buildHistory(
                p.name,
                snapshot.internal.observed.guests.filter((g) => g.profile === p.name),
                snapshot.internal.events,
                deps.clock(),
              ),
            )
            .sort((a, b) => b.startedAt.localeCompare(a.startedAt)),
        });
      },
    },
    {
      method: 'GET',
      pattern: ['builds', ':name'],
      handler: async (_req, res, [raw]) => {
        const name = guestName(raw as string, 'rebuild');
        const snapshot = await deps.snapshot();
        const build = findBuild(snapshot, name);
        const manifest = build.status === 'failed' ? undefined : await manifestOf(config, snapshot, build.template);
        sendJson(res, 200, { ...build, manifest: manifest ?? null, log: `/api/v1/builds/${name}/log` });
      },
    },
    {
      method: 'GET',
      pattern: ['builds', ':name', 'log'],
      handler: async (req, res, [raw], url) => {
        const name = guestName(raw as string, 'rebuild');
        const first = await buildLog(config, await deps.hypervisor(), name);
        if (first === undefined) throw new HttpError(404, 'no-log', `no console log for build "${name}"`);
        await streamLog(req, res, url, {
          first,
          read: async () => buildLog(config, await deps.hypervisor(), name),
          running: async () => isRunning(await deps.hypervisor(), name),
          everyMs: deps.followMs,
        });
      },
    },
    {
      method: 'GET',
      pattern: ['events'],
      handler: async (req, res) => serveEvents(req, res, deps.feed),
    },
  ];

  return async (req, res, url) => {
    const parts = url.pathname.split('/').filter(Boolean);
    if (parts[0] !== 'api' || parts[1] !== 'v1') return false;
    const rest = parts.slice(2);
    const matching = routes.filter(
      (r) => r.pattern.length === rest.length && r.pattern.every((p, i) => p.startsWith(':') || p === rest[i]),
    );
    if (matching.length === 0) throw new HttpError(404, 'not-found', `no such endpoint: ${url.pathname}`);
    const route = matching.find((r) => r.method === req.method);
    if (!route)
      throw new HttpError(405, 'method-not-allowed', `${req.method} is not allowed on ${url.pathname}`, {
        allow: matching.map((r) => r.method).join(', '),
      });
    const params = route.pattern.flatMap((p, i) => (p.startsWith(':') ? [rest[i] as string] : []));
    await route.handler(req, res, params, url);
    return true;
  };
}

function publish(feed: LiveFeed, event: FeedEvent): void {
  feed.publish(event);
}

async function isRunning(hypervisor: Hypervisor, name: string): Promise<boolean> {
  const observed = await hypervisor.observe();
  return observed.guests.some((g) => g.name === name && g.state === 'running');
}

/**
 * A console log as text; with `?follow=1`, the response stays open and what the guest prints is
 * sent as it comes (looked at every `everyMs`) until the guest stops running or the client leaves.
 */
async function streamLog(
  req: IncomingMessage,
  res: ServerResponse,
  url: URL,
  source: { first: string; read(): Promise<string | undefined>; running(): Promise<boolean>; everyMs: number },
): Promise<void> {
  const follow = ['1', 'true', 'yes'].includes(url.searchParams.get('follow') ?? '');
  res.writeHead(200, {
    'content-type': 'text/plain; charset=utf-8',
    'cache-control': 'no-store',
    'x-content-type-options': 'nosniff',
  });
  res.write(source.first);
  if (!follow) return void res.end();
  let sent = source.first.length;
  let open = true;
  req.on('close', () => (open = false));
  const deadline = Date.now() + 6 * 3600 * 1000;
  while (open && Date.now() < deadline) {
    const running = await source.running();
    const text = (await source.read()) ?? '';
    if (text.length > sent) {
      res.write(text.slice(sent));
      sent = text.length;
    }
    if (!running) break;
    await new Promise((r) => setTimeout(r, source.everyMs));
  }
  res.end();
}

/** Server-Sent Events: every feed event as `event: <type>`, a comment every 15 s to keep proxies from closing it. */
function serveEvents(req: IncomingMessage, res: ServerResponse, feed: LiveFeed): Promise<void> {
  res.writeHead(200, {
    'content-type': 'text/event-stream; charset=utf-8',
    'cache-control': 'no-store',
    connection: 'keep-alive',
    'x-accel-buffering': 'no',
  });
  let id = 0;
  res.write(`retry: 2000\nevent: hello\ndata: {}\n\n`);
  const unsubscribe = feed.subscribe((event) => {
    res.write(`id: ${++id}\nevent: ${event.type}\ndata: ${JSON.stringify(event)}\n\n`);
  });
  const heartbeat = setInterval(() => res.write(': keep-alive\n\n'), 15_000);
  return new Promise((resolve) => {
    const close = () => {
      clearInterval(heartbeat);
      unsubscribe();
      resolve();
    };
    req.on('close', close);
    res.on('error', close);
  });
}
