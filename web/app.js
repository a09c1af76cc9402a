// corral's dashboard: plain ES module, no build step. Renders from the JSON API and re-renders
// whenever the server's event stream (SSE) says something happened.

const API = '/api/v1';
const TOKEN_KEY = 'corral-token';
const $ = (id) => document.getElementById(id);

/** Element builder: h('a', { href }, 'text', child…); text is always set as text, never as HTML. */
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) if (c !== undefined && c !== null && c !== false) el.append(c);
  return el;
}

function duration(seconds) {
  if (seconds === undefined || seconds === null || Number.isNaN(seconds)) return '—';
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
  return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
}

function shortHash(hash) {
  return hash ? hash.replace(/^sha256:/, '').slice(0, 12) : '—';
}

function time(iso) {
  return iso ? new Date(iso).toLocaleString() : '—';
}

/** A span that counts up from `since` (or down to `until`) every second. */
function ticking(kind, iso) {
  const el = h('span', { 'data-tick': kind, 'data-at': iso, class: 'mono' });
  updateTick(el);
  return el;
}

function updateTick(el) {
  const at = Date.parse(el.getAttribute('data-at'));
  const delta = (Date.now() - at) / 1000;
  el.textContent =
    el.getAttribute('data-tick') === 'since' ? duration(delta) : delta >= 0 ? 'now' : `in ${duration(-delta)}`;
}

setInterval(() => document.querySelectorAll('[data-tick]').forEach(updateTick), 1000);

function toast(text) {
  const el = $('toast');
  el.textContent = text;
  el.classList.add('show');
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => el.classList.remove('show'), 4000);
}

async function getJson(path) {
  const res = await fetch(`${API}${path}`, { headers: { accept: 'application/json' } });
  const body = await res.json().catch(() => ({}));
  if (!res.ok) throw Object.assign(new Error(body.error?.message ?? res.statusText), { status: res.status });
  return body;
}

// ---- the token: asked for once, kept in localStorage, asked again when the server refuses it ----

function askToken() {
  const dialog = $('token-dialog');
  const input = $('token-input');
  input.value = '';
  return new Promise((resolve) => {
    dialog.addEventListener(
      'close',
      () => {
        const token = dialog.returnValue === 'save' ? input.value.trim() : '';
        if (token) localStorage.setItem(TOKEN_KEY, token);
        resolve(token || undefined);
      },
      { once: true },
    );
    dialog.showModal();
    input.focus();
  });
}

async function mutate(path) {
  for (let attempt = 0; attempt < 2; attempt++) {
    const token = localStorage.getItem(TOKEN_KEY) ?? (await askToken());
    if (!token) return undefined;
    const res = await fetch(`${API}${path}`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: '{}',
    });
    const body = await res.json().catch(() => ({}));
    if (res.status === 401) {
      localStorage.removeItem(TOKEN_KEY);
      toast('The token was refused; enter it again.');
      continue;
    }
    if (!res.ok) {
      toast(body.error?.message ?? `failed: ${res.status}`);
      return undefined;
    }
    return body;
  }
  return undefined;
}

async function rebuild(profile) {
  const result = await mutate(`/profiles/${encodeURIComponent(profile)}/rebuild`);
  if (result) toast(`Rebuild of ${profile} requested (${result.via})`);
  refresh();
}

$('reconcile').addEventListener('click', async () => {
  const result = await mutate('/reconcile');
  if (result) toast(`Pass requested (${result.via})`);
});

// ---- views ----

function statusBadge(build) {
  if (!build) return h('span', { class: 'muted' }, 'none');
  const cls = { succeeded: 'ok', failed: 'bad', running: 'run' }[build.status];
  return h('span', { class: `badge ${cls}`, 'data-testid': 'build-status' }, build.status);
}

function buildLink(build) {
  return h('a', { href: `#/build/${encodeURIComponent(build.name)}`, class: 'mono' }, build.gen || build.name);
}

/** The profile's CI summary in one line, as `corral status` words it. */
function profileCi(p) {
  if (!p.ci) return 'no CI';
  const parts = [p.ci.system];
  if (p.ci.busy !== null) parts.push(`${p.ci.busy} busy`);
  if (p.ci.failing) parts.push(`FAILING: ${p.ci.failing}`);
  if (p.ci.orphans.length > 0) parts.push(`orphaned registrations: ${p.ci.orphans.join(', ')}`);
  return parts.join(', ');
}

function runnerCiClass(ci) {
  if (!ci) return 'muted';
  if (ci.busy) return 'ok';
  return /^(failing|not registered|unknown)/.test(ci.state) ? 'warn' : '';
}

function profileCard(p) {
  const t = p.template;
  const ratio = p.runners.desired > 0 ? Math.min(1, p.runners.ready / p.runners.desired) : 1;
  const bar = h('div', { class: 'bar' }, h('span'));
  bar.firstChild.style.width = `${Math.round(ratio * 100)}%`;
  return h(
    'article',
    { class: 'card', 'data-profile': p.name },
    h(
      'h2',
      {},
      h('a', { href: `#/profile/${encodeURIComponent(p.name)}` }, p.name),
      h('span', { class: 'muted' }, p.source),
      p.pending.length > 0 ? h('span', { class: 'badge warn' }, 'pending') : null,
    ),
    h(
      'dl',
      { class: 'facts' },
      h('dt', {}, 'template'),
      h(
        'dd',
        {},
        t
          ? [
              h('span', { class: 'mono' }, t.gen),
              ' · ',
              ticking('since', t.createdAt),
              ' old ',
              t.current ? null : h('span', { class: 'badge warn' }, 'outdated'),
            ]
          : h('span', { class: 'muted' }, 'none yet'),
      ),
      h('dt', {}, 'base'),
      h(
        'dd',
        { class: 'mono', title: t?.baseVersion ?? p.desired.baseVersion },
        shortHash(t?.baseVersion ?? p.desired.baseVersion),
      ),
      h('dt', {}, 'runners'),
      h(
        'dd',
        { 'data-testid': 'runners' },
        `${p.runners.ready}/${p.runners.desired} ready`,
        p.runners.running !== p.runners.ready ? ` (${p.runners.running} running)` : '',
      ),
      h('dt', {}, 'CI'),
      h('dd', { 'data-testid': 'ci', class: p.ci ? (p.ci.failing ? 'warn' : '') : 'muted' }, profileCi(p)),
      h('dt', {}, 'last build'),
      h(
        'dd',
        {},
        p.lastBuild
          ? [
              statusBadge(p.lastBuild),
              ' ',
              buildLink(p.lastBuild),
              p.lastBuild.error ? h('div', { class: 'bad' }, p.lastBuild.error) : null,
            ]
          : h('span', { class: 'muted' }, 'none'),
      ),
      p.building
        ? [
            h('dt', {}, 'building'),
            h(
              'dd',
              { 'data-testid': 'building' },
              statusBadge(p.building),
              ' ',
              buildLink(p.building),
              ' for ',
              ticking('since', p.building.startedAt),
            ),
          ]
        : null,
    ),
    bar,
    p.pending.length > 0
      ? h(
          'ul',
          { class: 'pending' },
          p.pending.map((w) => h('li', {}, w.reason, w.retryAt ? [' — retry ', ticking('until', w.retryAt)] : null)),
        )
      : null,
    h(
      'div',
      { class: 'row' },
      h('button', { type: 'button', 'data-testid': 'rebuild', onclick: () => rebuild(p.name) }, 'Rebuild'),
      h('a', { href: `#/profile/${encodeURIComponent(p.name)}` }, 'history'),
    ),
  );
}

async function renderProfiles(main) {
  const status = await getJson('/status');
  renderSummary(status);
  const problems =
    status.problems.length > 0
      ? h(
          'section',
          { class: 'card bad' },
          h('strong', {}, 'The sources have problems; the last good view is in use:'),
          h(
            'ul',
            {},
            status.problems.map((pr) => h('li', { class: 'mono' }, `${pr.file}${pr.where ?? ''}: ${pr.message}`)),
          ),
        )
      : null;
  main.replaceChildren(
    problems ?? '',
    status.profiles.length === 0
      ? h('p', { class: 'muted' }, 'No profiles in the compiled view yet.')
      : h('div', { class: 'grid' }, status.profiles.map(profileCard)),
    status.unrecognized.length > 0
      ? h(
          'section',
          {},
          h('h3', {}, 'Left alone'),
          h(
            'ul',
            {},
            status.unrecognized.map((u) => h('li', { class: 'mono' }, `${u.name}: ${u.reason}`)),
          ),
        )
      : '',
  );
}

function renderSummary(status) {
  $('summary').textContent = [
    status.generation ? `generation ${status.generation}` : 'not reconciled yet',
    status.hypervisor,
    status.lock ? `locked by ${status.lock.command} (pid ${status.lock.pid})` : null,
    status.lastPassAt ? `last pass ${new Date(status.lastPassAt).toLocaleTimeString()}` : null,
  ]
    .filter(Boolean)
    .join(' · ');
}

function table(headers, rows) {
  return h(
    'div',
    { class: 'scroll' },
    h(
      'table',
      {},
      h(
        'thead',
        {},
        h(
          'tr',
          {},
          headers.map((x) => h('th', {}, x)),
        ),
      ),
      h('tbody', {}, rows),
    ),
  );
}

async function renderProfile(main, name) {
  const p = await getJson(`/profiles/${encodeURIComponent(name)}`);
  main.replaceChildren(
    h('p', {}, h('a', { href: '#/' }, '← all profiles')),
    h('div', { class: 'grid' }, profileCard(p)),
    h(
      'section',
      {},
      h('h3', {}, 'Builds'),
      p.builds.length === 0
        ? h('p', { class: 'muted' }, 'No builds recorded.')
        : table(
            ['build', 'status', 'started', 'took', 'why'],
            p.builds.map((b) =>
              h(
                'tr',
                { 'data-build': b.name },
                h('td', {}, buildLink(b)),
                h('td', {}, statusBadge(b), b.error ? h('div', { class: 'bad' }, b.error) : null),
                h('td', {}, time(b.startedAt)),
                h('td', {}, b.status === 'running' ? ticking('since', b.startedAt) : duration(b.durationMs / 1000)),
                h('td', { class: 'muted' }, b.reason ?? ''),
              ),
            ),
          ),
    ),
    h(
      'section',
      {},
      h('h3', {}, 'Templates'),
      table(
        ['template', 'age', 'inputs', 'runners'],
        p.templates.map((t) =>
          h(
            'tr',
            {},
            h('td', { class: 'mono' }, t.name),
            h('td', {}, ticking('since', t.createdAt)),
            h(
              'td',
              { class: 'mono' },
              shortHash(t.inputsHash),
              t.current ? '' : h('span', { class: 'badge warn' }, 'outdated'),
            ),
            h('td', {}, String(t.runners.length)),
          ),
        ),
      ),
    ),
    h(
      'section',
      {},
      h('h3', {}, 'Runners'),
      table(
        ['runner', 'state', 'template', 'CI'],
        p.runnerGuests.map((r) =>
          h(
            'tr',
            {},
            h('td', {}, h('a', { href: `#/runner/${encodeURIComponent(r.name)}`, class: 'mono' }, r.name)),
            h('td', { class: r.state === 'running' ? 'ok' : 'warn' }, r.state),
            h('td', { class: 'mono' }, r.template, r.current ? '' : h('span', { class: 'badge warn' }, 'outdated')),
            h('td', { 'data-testid': 'runner-ci', class: runnerCiClass(r.ci) }, r.ci ? r.ci.state : 'no CI'),
          ),
        ),
      ),
    ),
  );
}

/** The build page keeps one followed log stream open; leaving the page closes it. */
let logStream;

async function followLog(path, pre) {
  logStream?.abort();
  const controller = new AbortController();
  logStream = controller;
  try {
    const res = await fetch(`${API}${path}?follow=1`, { signal: controller.signal });
    if (!res.ok) {
      pre.textContent = '(no console log kept)';
      return;
    }
    pre.textContent = '';
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
      pre.textContent += value;
      if (atBottom) pre.scrollTop = pre.scrollHeight;
    }
  } catch (error) {
    if (error.name !== 'AbortError') pre.textContent += `\n(log stream ended: ${error.message})`;
  }
}

function manifestSection(m) {
  if (!m)
    return h(
      'p',
      { class: 'muted', 'data-testid': 'manifest' },
      'No provenance manifest for this build (it failed, or its inputs are no longer the profile’s).',
    );
  const base = m.base ? (m.base.kind === 'file' ? m.base.file : (m.base.url ?? m.base.ref)) : '—';
  return h(
    'div',
    { 'data-testid': 'manifest' },
    h(
      'dl',
      { class: 'facts' },
      h('dt', {}, 'template'),
      h('dd', { class: 'mono' }, m.template),
      h('dt', {}, 'inputs hash'),
      h('dd', { class: 'mono' }, m.inputsHash),
      h('dt', {}, 'base version'),
      h('dd', { class: 'mono' }, m.baseVersion),
      h('dt', {}, 'base'),
      h('dd', { class: 'mono' }, base),
      h('dt', {}, 'from'),
      h(
        'dd',
        { class: 'muted' },
        m.source === 'stored' ? 'the manifest stored with the template' : 'the compiled view (same inputs hash)',
      ),
    ),
    table(
      ['input file', 'sha256'],
      (m.inputs ?? []).map((f) =>
        h(
          'tr',
          {},
          h('td', { class: 'mono' }, f.path, f.executable ? ' (x)' : ''),
          h('td', { class: 'mono' }, f.sha256),
        ),
      ),
    ),
  );
}

async function renderBuild(main, name, again) {
  const b = await getJson(`/builds/${encodeURIComponent(name)}`);
  const pre = again ? main.querySelector('pre.log') : h('pre', { class: 'log', 'data-testid': 'log' }, 'loading…');
  const header = h(
    'div',
    { class: 'card', id: 'build-header' },
    h('h2', {}, h('span', { class: 'mono' }, b.name), statusBadge(b)),
    h(
      'dl',
      { class: 'facts' },
      h('dt', {}, 'profile'),
      h('dd', {}, h('a', { href: `#/profile/${encodeURIComponent(b.profile)}` }, b.profile)),
      h('dt', {}, 'started'),
      h('dd', {}, time(b.startedAt)),
      h('dt', {}, b.status === 'running' ? 'running for' : 'took'),
      h('dd', {}, b.status === 'running' ? ticking('since', b.startedAt) : duration(b.durationMs / 1000)),
      b.reason ? [h('dt', {}, 'why'), h('dd', {}, b.reason)] : null,
      b.error ? [h('dt', {}, 'error'), h('dd', { class: 'bad' }, b.error)] : null,
    ),
  );
  if (again) {
    main.querySelector('#build-header').replaceWith(header);
    main.querySelector('[data-testid="manifest"]').replaceWith(manifestSection(b.manifest));
    return;
  }
  main.replaceChildren(
    h('p', {}, h('a', { href: `#/profile/${encodeURIComponent(b.profile)}` }, `← ${b.profile}`)),
    header,
    h('section', {}, h('h3', {}, 'Provenance'), manifestSection(b.manifest)),
    h('section', {}, h('h3', {}, 'Console'), pre),
  );
  void followLog(`/builds/${encodeURIComponent(name)}/log`, pre);
}

async function renderRunner(main, name, again) {
  const r = await getJson(`/runners/${encodeURIComponent(name)}`);
  const header = h(
    'div',
    { class: 'card', id: 'runner-header' },
    h(
      'h2',
      {},
      h('span', { class: 'mono' }, r.name),
      h('span', { class: `badge ${r.state === 'running' ? 'ok' : 'warn'}` }, r.state),
    ),
    h(
      'dl',
      { class: 'facts' },
      h('dt', {}, 'profile'),
      h('dd', {}, h('a', { href: `#/profile/${encodeURIComponent(r.profile)}` }, r.profile)),
      h('dt', {}, 'template'),
      h('dd', { class: 'mono' }, r.template, r.current ? '' : h('span', { class: 'badge warn' }, 'outdated')),
      h('dt', {}, 'created'),
      h('dd', {}, time(r.createdAt)),
      h('dt', {}, 'CI'),
      h('dd', { class: runnerCiClass(r.ci) }, r.ci ? `${r.ci.system}: ${r.ci.state}` : 'no CI'),
    ),
  );
  if (again) return void main.querySelector('#runner-header').replaceWith(header);
  const pre = h('pre', { class: 'log', 'data-testid': 'log' }, 'loading…');
  main.replaceChildren(
    h('p', {}, h('a', { href: `#/profile/${encodeURIComponent(r.profile)}` }, `← ${r.profile}`)),
    header,
    h('section', {}, h('h3', {}, 'Console'), pre),
  );
  void followLog(`/runners/${encodeURIComponent(name)}/log`, pre);
}

// ---- routing and live updates ----

let rendering = Promise.resolve();
let lastRoute = '';

function refresh() {
  rendering = rendering.then(render, render);
}

async function render() {
  const main = $('main');
  const route = location.hash.replace(/^#\/?/, '');
  const again = route === lastRoute;
  if (!again) logStream?.abort();
  lastRoute = route;
  const [page, arg] = route.split('/');
  try {
    if (page === 'profile' && arg) await renderProfile(main, decodeURIComponent(arg));
    else if (page === 'build' && arg) await renderBuild(main, decodeURIComponent(arg), again);
    else if (page === 'runner' && arg) await renderRunner(main, decodeURIComponent(arg), again);
    else await renderProfiles(main);
  } catch (error) {
    main.replaceChildren(
      h('p', { class: 'bad' }, error.status === 404 ? 'Not found.' : `Cannot load: ${error.message}`),
      h('p', {}, h('a', { href: '#/' }, '← all profiles')),
    );
  }
}

let pending;
function refreshSoon() {
  clearTimeout(pending);
  pending = setTimeout(refresh, 150);
}

function connect() {
  const source = new EventSource(`${API}/events`);
  const live = $('live');
  source.addEventListener('open', () => {
    live.className = 'live on';
    live.textContent = 'live';
    refreshSoon();
  });
  source.addEventListener('error', () => {
    live.className = 'live off';
    live.textContent = 'reconnecting';
  });
  for (const type of ['pass', 'action', 'guest', 'request']) source.addEventListener(type, refreshSoon);
}

window.addEventListener('hashchange', refresh);
refresh();
connect();
