// The Slipway dashboard. It polls /v1/apps/{app} once a second and keeps each service's
// last 120 figures (two minutes) to draw as SVG polylines. It also follows the event
// stream, tails logs, and rolls back. Every request carries the token the user signed in
// with; the page keeps it in sessionStorage (this tab only) and asks again on a 401.
'use strict';

const POINTS = 120; // One point a second: two minutes of history.
const POLL_MS = 1000;
const TIMEOUT_MS = 5000; // Every plain request gives up after this.
const OP_TIMEOUT_MS = 180000; // A rollback may first have to start a cold revision.
const H = 40; // The charts' height in SVG units.
const PAD = 2; // Keeps lines off the charts' top and bottom edges.
const SVG = 'http://www.w3.org/2000/svg';
const $ = (id) => document.getElementById(id);
const enc = encodeURIComponent;
const ui = { app: null, cards: new Map(), series: new Map(), events: null, status: null, logsBusy: false, started: false };
let token = sessionStorage.getItem('slipway-token');
const auth = (headers = {}) => ({ ...headers, Authorization: `Bearer ${token}` });

/** Shows the sign-in form (with why, after a refused token) and forgets the token. */
function signOut(why = '') {
  token = null;
  sessionStorage.removeItem('slipway-token');
  if (ui.events) ui.events.abort();
  $('signin-error').textContent = why;
  $('signin').hidden = false;
  $('auth').textContent = '';
  $('token').focus();
}

$('signin').addEventListener('submit', async (e) => {
  e.preventDefault();
  token = $('token').value.trim();
  try {
    await getJSON('/v1/server');
  } catch (err) {
    return signOut(err.message);
  }
  sessionStorage.setItem('slipway-token', token);
  $('token').value = '';
  start();
});

/** Makes an element, for example h('td', {class: 'x'}, 'text', child). SVG tags get SVG's namespace. */
function h(tag, attrs = {}, ...kids) {
  const el = ['svg', 'polyline', 'line'].includes(tag)
    ? document.createElementNS(SVG, tag) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? '' : v);
  }
  el.append(...kids.flat().filter((k) => k !== null && k !== undefined && k !== false)
    .map((k) => (k instanceof Node ? k : String(k))));
  return el;
}

/** Fetches `path` and reads the answer with `read`, all within `ms`. It throws the API's own error message. */
async function call(path, read, opts = {}, ms = TIMEOUT_MS) {
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(), ms);
  try {
    const r = await fetch(path, { cache: 'no-store', ...opts, headers: auth(opts.headers), signal: ctl.signal });
    if (!r.ok) {
      const body = await r.json().catch(() => ({}));
      if (r.status === 401 && token) signOut(body.error);
      throw new Error(body.error || `${path} answered ${r.status}`);
    }
    return await read(r);
  } catch (e) {
    throw e.name === 'AbortError' ? new Error(`${path} did not answer within ${ms / 1000} s`) : e;
  } finally {
    clearTimeout(timer);
  }
}
const getJSON = (path) => call(path, (r) => r.json());

/** Calls `onLine` with each object of a newline-delimited JSON answer as soon as it arrives (each raw line with `json` false). */
async function readLines(r, onLine, json = true) {
  const parse = json ? JSON.parse : (l) => l;
  const reader = r.body.getReader();
  const decoder = new TextDecoder();
  let buf = '';
  for (;;) {
    const { value, done } = await reader.read();
    buf += decoder.decode(value || new Uint8Array(), { stream: !done });
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i).trim();
      buf = buf.slice(i + 1);
      if (line) onLine(parse(line));
    }
    if (done) return buf.trim() && onLine(parse(buf.trim()));
  }
}

const time = (ts) => { const d = new Date(ts); return isNaN(d) ? ts : d.toLocaleTimeString(); };
const ms = (v) => (v == null ? '–' : v < 10 ? v.toFixed(1) : String(Math.round(v)));

function setConn(ok, why = '') {
  $('conn').className = `conn ${ok ? 'live' : 'down'}`;
  $('conn').textContent = ok ? 'live' : 'offline';
  $('conn').title = why;
}

async function loadApps() {
  try {
    const [apps, server] = await Promise.all([getJSON('/v1/apps'), getJSON('/v1/server')]);
    $('server').textContent = `slipway ${server.version} · router ${server.router}`;
    const names = apps.map((a) => a.name);
    const sel = $('app');
    if ([...sel.options].map((o) => o.value).join() !== names.join()) {
      sel.replaceChildren(...names.map((n) => h('option', { value: n }, n)));
      sel.value = ui.app ?? '';
    }
    $('empty').hidden = names.length > 0;
    const wanted = new URLSearchParams(location.search).get('app');
    if (!names.includes(ui.app)) selectApp(names.includes(wanted) ? wanted : names[0] ?? null);
  } catch (e) {
    setConn(false, e.message);
  }
}

function selectApp(name) {
  ui.app = name;
  $('app').value = name ?? '';
  for (const c of ui.cards.values()) c.el.remove();
  ui.cards.clear();
  ui.series.clear();
  ui.status = null;
  followEvents();
}

async function poll() {
  if (ui.app && token) {
    try {
      render(await getJSON(`/v1/apps/${enc(ui.app)}`));
      setConn(true);
    } catch (e) {
      setConn(false, e.message);
    }
  }
  setTimeout(poll, POLL_MS);
}

function render(st) {
  if (st.app !== ui.app) return; // The user picked another app while this answer was on its way.
  ui.status = st;
  $('limits').hidden = !st.limits_unavailable;
  $('limits').textContent = st.limits_unavailable
    ? `Resource limits are not enforced on this server: ${st.limits_unavailable}` : '';
  renderDatabases(st.databases ?? []);
  renderCertificates(st.certificates ?? []);
  const names = st.services.map((s) => s.name);
  for (const [name, c] of ui.cards) {
    if (!names.includes(name)) { c.el.remove(); ui.cards.delete(name); ui.series.delete(name); }
  }
  const box = $('services');
  st.services.forEach((s, i) => {
    let c = ui.cards.get(s.name);
    if (!c) { c = makeCard(s.name); ui.cards.set(s.name, c); }
    // Moving a card only when it is out of place keeps focus and hover on its buttons.
    if (box.children[i] !== c.el) box.insertBefore(c.el, box.children[i] ?? null);
    updateCard(c, s, record(s));
  });
  updateLogChoices(st);
}

/** One line per managed database: engine, health, last backup; red when down or failing. */
function renderDatabases(list) {
  const box = $('databases');
  box.hidden = list.length === 0;
  box.replaceChildren(h('h2', {}, 'Databases'), ...list.map((d) => {
    const down = d.state !== 'ready' && d.state !== 'stopped';
    const failing = d.backup && d.backup.failing;
    const backup = failing ? `backup FAILED: ${failing}`
      : (d.backup && d.backup.last_success ? `last backup ${d.backup.last_success}` : 'no backup yet');
    return h('p', { class: down || failing ? 'database problem' : 'database', 'data-database': d.name },
      `${d.name} · ${d.engine} ${d.version} · ${d.state} · ${backup}`);
  }));
}

/** One line per routed host with a certificate (from a file or over ACME): state, expiry; red
 * when obtaining it fails, when it is expiring (see `CertificateStatus`), or has expired. */
function renderCertificates(list) {
  const box = $('certificates');
  box.hidden = list.length === 0;
  box.replaceChildren(h('h2', {}, 'Certificates'), ...list.map((c) => {
    const bad = c.last_error || ['expiring', 'expired', 'failed'].includes(c.state);
    const expiry = c.not_after ? `expires ${c.not_after}` : 'none yet';
    const failing = c.last_error ? ` · ACME FAILED (${c.failures}×): ${c.last_error}` : '';
    return h('p', { class: bad ? 'certificate problem' : 'certificate', 'data-host': c.host },
      `${c.host} · ${c.source} · ${c.state} · ${expiry}${failing}`);
  }));
}

/** Adds this second's figures to the service's rolling series and returns the series. */
function record(s) {
  const f = s.figures;
  const list = ui.series.get(s.name) ?? [];
  list.push({
    rps: f.rps,
    err: f.requests ? (100 * f.errors) / f.requests : 0,
    p50: f.p50_ms ?? 0, p95: f.p95_ms ?? 0, p99: f.p99_ms ?? 0,
  });
  if (list.length > POINTS) list.shift();
  ui.series.set(s.name, list);
  return list;
}

function chart(label, metric, keys) {
  const value = h('b', { class: 'value' }, '–');
  const lines = keys.map((k) => h('polyline', { class: k, points: '' }));
  const svg = h('svg', { viewBox: `0 0 ${POINTS - 1} ${H}`, preserveAspectRatio: 'none', role: 'img', 'aria-label': label },
    h('line', { class: 'axis', x1: 0, y1: H - PAD, x2: POINTS - 1, y2: H - PAD }), ...lines);
  const el = h('figure', { class: 'chart', 'data-metric': metric }, h('figcaption', {}, h('span', {}, label), value), svg);
  return { el, svg, value, lines, keys };
}

// Draws the series right-aligned. With n points, point i sits at x = POINTS - n + i, so the
// newest point is always at the right edge (x = 119) and a fresh page fills in from the
// right. Values scale to the chart's largest value, or to `floor` if that is larger:
// y = H - PAD - v / max * (H - 2 * PAD). With H = 40 and PAD = 2, v = 5 of max 10 gives
// y = 40 - 2 - 18 = 20 (the middle), and v = 0 gives y = 38 (the baseline).
function draw(ch, list, floor, text) {
  const max = Math.max(floor, ...list.flatMap((p) => ch.keys.map((k) => p[k])));
  ch.lines.forEach((line, j) => {
    const k = ch.keys[j];
    line.setAttribute('points', list.map((p, i) =>
      `${POINTS - list.length + i},${(H - PAD - (p[k] / max) * (H - 2 * PAD)).toFixed(2)}`).join(' '));
  });
  ch.svg.dataset.values = list.map((p) => ch.keys.map((k) => +p[k].toFixed(3)).join('/')).join(' ');
  ch.value.textContent = text;
}

function makeCard(name) {
  const c = { name, revKey: null, revTimer: null, busy: false };
  c.link = h('a', { target: '_blank', rel: 'noopener noreferrer' });
  c.health = h('span', { class: 'health' });
  c.problem = h('p', { class: 'problem', hidden: true });
  c.traffic = h('div', { class: 'traffic', 'aria-label': 'traffic split' });
  c.charts = {
    rps: chart('req/s', 'rps', ['rps']),
    err: chart('errors', 'errors', ['err']),
    lat: chart('p50 / p95 / p99 ms', 'latency', ['p50', 'p95', 'p99']),
  };
  c.instances = h('tbody');
  c.revisions = h('tbody');
  c.op = h('pre', { class: 'op', hidden: true, 'aria-live': 'polite' });
  c.rollback = h('button', { type: 'button', class: 'rollback', disabled: true,
    onclick: (e) => rollback(c, null, e.currentTarget) }, 'Roll back');
  const head = (...titles) => h('thead', {}, h('tr', {}, titles.map((t) => h('th', {}, t))));
  c.el = h('article', { class: 'card', 'data-service': name },
    h('div', { class: 'card-head' }, h('h2', {}, name), c.link, c.health),
    c.problem, c.traffic,
    h('div', { class: 'charts' }, Object.values(c.charts).map((ch) => ch.el)),
    h('table', { class: 'instances' },
      head('instance', 'rev', 'state', 'detail', 'restarts', 'in flight', 'routed', 'cpu', 'memory', 'oom kills'), c.instances),
    h('table', { class: 'revisions' },
      head('revision', 'state', 'traffic', 'instances', 'created', 'message', ''), c.revisions),
    h('div', { class: 'actions' }, c.rollback,
      h('button', { type: 'button', class: 'show-logs', onclick: () => showLogs(name) }, 'Logs')),
    c.op);
  return c;
}

function updateCard(c, s, list) {
  c.link.href = s.url;
  c.link.textContent = s.url;
  c.health.textContent = `${s.ready}/${s.total} ready`;
  c.health.className = `health ${s.total > 0 && s.ready === s.total ? 'ok' : 'bad'}`;
  c.problem.hidden = !s.problem;
  c.problem.textContent = s.problem ? [s.problem, ...s.problem_lines].join('\n') : '';
  const split = s.traffic.map((t) => `${t.revision}:${t.percent}`).join(' ');
  if (c.traffic.dataset.split !== split) {
    c.traffic.dataset.split = split;
    c.traffic.replaceChildren(...s.traffic.map((t) => {
      const el = h('span', { class: 'share', 'data-revision': t.revision, title: `revision ${t.revision} gets ${t.percent} % of requests` },
        `revision ${t.revision} · ${t.percent} %`);
      el.style.flexBasis = `${t.percent}%`;
      return el;
    }));
  }
  const f = s.figures;
  draw(c.charts.rps, list, 1, f.rps.toFixed(1));
  draw(c.charts.err, list, 1, `${list[list.length - 1].err.toFixed(1)} %`);
  draw(c.charts.lat, list, 1, `${ms(f.p50_ms)} / ${ms(f.p95_ms)} / ${ms(f.p99_ms)}`);
  c.instances.replaceChildren(...s.instances.map((i) => h('tr', { 'data-instance': i.id },
    h('td', { class: 'mono' }, i.id), h('td', {}, `r${i.revision}`), h('td', { class: `state-${i.state}` }, i.state),
    h('td', {}, i.detail ?? ''), h('td', {}, i.restarts), h('td', {}, i.in_flight), h('td', {}, i.routed ? 'yes' : 'no'),
    ...usageCells(i.resources))));
  // The revisions table changes only with a deploy, a traffic switch or an instance change.
  const key = `${s.latest_revision} ${split} ${s.instances.map((i) => i.revision).join()}`;
  if (c.revKey !== key) { c.revKey = key; loadRevisions(c); }
}

/** Cells for an instance's cpu, memory (against their limits) and out-of-memory kills. */
function usageCells(r) {
  if (!r) return [h('td', {}, '–'), h('td', {}, '–'), h('td', {}, '–')];
  const mib = (b) => `${(b / 1048576).toFixed(1)} MiB`;
  const near = (used, limit) => (limit && used > 0.9 * limit ? 'usage near-limit' : 'usage');
  return [
    h('td', { class: near(r.cpu_cores, r.cpu_limit_cores) },
      r.cpu_limit_cores ? `${r.cpu_cores.toFixed(2)} / ${r.cpu_limit_cores}` : r.cpu_cores.toFixed(2)),
    h('td', { class: near(r.memory_bytes, r.memory_limit_bytes) },
      r.memory_limit_bytes ? `${mib(r.memory_bytes)} / ${mib(r.memory_limit_bytes)}` : mib(r.memory_bytes)),
    h('td', { class: r.oom_kills > 0 ? 'usage oom' : 'usage' }, r.oom_kills > 0 ? `${r.oom_kills} OOMKilled` : '0'),
  ];
}

/** Reloads a card's revisions table soon; several calls in a row make one request. */
function loadRevisions(c) {
  c.revTimer ??= setTimeout(async () => {
    c.revTimer = null;
    try {
      const revs = await getJSON(`/v1/apps/${enc(ui.app)}/services/${enc(c.name)}/revisions`);
      // A plain rollback returns to the newest ready revision older than the serving one.
      const serving = Math.max(0, ...revs.filter((r) => r.traffic > 0).map((r) => r.number));
      const earlier = revs.some((r) => r.state === 'ready' && r.traffic === 0 && r.number < serving);
      c.rollback.disabled = c.busy || !earlier;
      c.rollback.title = earlier ? '' : 'There is no earlier ready revision to roll back to';
      c.revisions.replaceChildren(...revs.slice(-5).reverse().map((r) => h('tr', { 'data-revision': r.number },
        h('td', {}, `r${r.number}`), h('td', { class: `state-${r.state}` }, r.state), h('td', {}, `${r.traffic} %`),
        h('td', {}, r.instances), h('td', {}, time(r.created_at)), h('td', {}, r.message),
        h('td', {}, r.state === 'ready' && r.traffic === 0 && h('button', {
          type: 'button', class: 'rollback-to', disabled: c.busy,
          onclick: (e) => rollback(c, r.number, e.currentTarget),
        }, `serve r${r.number}`)))));
    } catch (e) {
      c.revKey = null; // The next poll tries again.
    }
  }, 200);
}

function describe(p) {
  switch (p.type) {
    case 'starting': return `starting revision ${p.revision} (${p.instances} instances)`;
    case 'instance_ready': return `instance ${p.instance} ready after ${p.elapsed_ms} ms`;
    case 'switched': return `switched ${p.service} to revision ${p.revision}${p.previous ? ` (was ${p.previous})` : ''} in ${p.elapsed_ms} ms`;
    case 'unchanged': return `${p.service} already serves revision ${p.revision}`;
    case 'failed': return [`failed: ${p.error}`, ...p.last_lines.map((l) => `  | ${l}`)].join('\n');
    case 'rollout_started': return `canary rollout of revision ${p.revision} began at ${p.percent} % (steps ${p.steps.join(', ')} %)`;
    case 'downtime': return `${p.service} answered 503 for ${p.downtime_ms} ms while it was recreated`;
    case 'done': return p.ok ? 'done' : 'done, with failures';
    default: return JSON.stringify(p);
  }
}

/** Rolls a service back, to revision `to` or (null) to the one before. The first click only arms the button. */
async function rollback(c, to, btn) {
  // A second click within 4 s confirms, so a stray click changes nothing.
  if (!btn.classList.contains('armed')) {
    btn.dataset.label = btn.textContent;
    btn.classList.add('armed');
    btn.textContent = 'Confirm?';
    btn.disarm = setTimeout(() => { btn.classList.remove('armed'); btn.textContent = btn.dataset.label; }, 4000);
    return;
  }
  clearTimeout(btn.disarm);
  btn.classList.remove('armed');
  btn.textContent = btn.dataset.label;
  btn.disabled = true;
  c.busy = true;
  const say = (line) => { c.op.textContent += `${line}\n`; };
  c.op.hidden = false;
  c.op.className = 'op';
  c.op.textContent = '';
  delete c.op.dataset.done;
  say(`rolling ${c.name} back to ${to ? `revision ${to}` : 'the previous revision'}…`);
  let ok = false;
  try {
    await call(`/v1/apps/${enc(ui.app)}/services/${enc(c.name)}/rollback`,
      (r) => readLines(r, (p) => { if (p.type === 'done') ok = p.ok; say(describe(p)); }),
      { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ to }) },
      OP_TIMEOUT_MS);
  } catch (e) {
    say(`error: ${e.message}`);
  }
  c.op.classList.add(ok ? 'ok' : 'failed');
  c.op.dataset.done = ok ? 'ok' : 'failed';
  c.busy = false;
  btn.disabled = false;
  loadRevisions(c);
}

/** Follows the app's event stream (server-sent events read through fetch, which can send
 * the token, unlike EventSource), reconnecting after the last event seen. */
async function followEvents() {
  if (ui.events) ui.events.abort();
  $('events').replaceChildren();
  if (!ui.app || !token) return;
  const ctl = new AbortController();
  ui.events = ctl;
  let after = '';
  while (!ctl.signal.aborted) {
    try {
      const r = await fetch(`/v1/events/stream?app=${enc(ui.app)}&limit=50${after}`, { headers: auth(), signal: ctl.signal });
      if (r.status === 401) return signOut((await r.json()).error);
      await readLines(r, (line) => {
        if (line.startsWith('data:')) after = `&after=${showEvent(JSON.parse(line.slice(5)))}`;
      }, false);
    } catch (e) {
      if (ctl.signal.aborted) return;
    }
    await new Promise((res) => setTimeout(res, 2000));
  }
}

/** Adds an event to the list, newest first; returns its id. */
function showEvent(e) {
  if (e.app !== ui.app) return e.id;
  const list = $('events');
  list.prepend(h('li', { 'data-kind': e.kind }, h('span', { class: 'muted' }, time(e.ts)), h('span', { class: 'kind' }, e.kind),
    e.service && `${e.service}${e.revision ? ` r${e.revision}` : ''}: `, e.message, e.actor && h('span', { class: 'actor' }, ` by ${e.actor}`)));
  while (list.children.length > 200) list.lastChild.remove();
  const c = e.service && ui.cards.get(e.service);
  if (c) loadRevisions(c);
  return e.id;
}

function updateLogChoices(st) {
  const svcSel = $('log-service');
  const names = st.services.map((s) => s.name);
  if ([...svcSel.options].map((o) => o.value).join() !== names.join()) {
    const keep = svcSel.value;
    svcSel.replaceChildren(...names.map((n) => h('option', { value: n }, n)));
    svcSel.value = names.includes(keep) ? keep : names[0] ?? '';
    refreshLogs();
  }
  const instSel = $('log-instance');
  const svc = st.services.find((s) => s.name === svcSel.value);
  const ids = ['', ...(svc ? svc.instances.map((i) => i.id) : [])];
  if ([...instSel.options].map((o) => o.value).join() !== ids.join()) {
    const keep = instSel.value;
    instSel.replaceChildren(...ids.map((id) => h('option', { value: id }, id || 'all instances')));
    instSel.value = ids.includes(keep) ? keep : '';
  }
}

async function refreshLogs() {
  const svc = $('log-service').value;
  const inst = $('log-instance').value;
  if (!ui.app || !svc || ui.logsBusy) return;
  ui.logsBusy = true;
  const pre = $('logs');
  try {
    // With one instance picked, read more lines so that 50 of them are likely its own.
    const text = await call(`/v1/apps/${enc(ui.app)}/services/${enc(svc)}/logs?tail=${inst ? 500 : 50}`, (r) => r.text());
    const lines = text.split('\n').filter(Boolean).map((l) => JSON.parse(l))
      .filter((l) => !inst || l.instance === inst).slice(-50);
    const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
    pre.textContent = lines.map((l) => `${time(l.ts)} ${l.instance} ${l.stream === 'stderr' ? '!' : '|'} ${l.text}`)
      .join('\n') || '(no output yet)';
    pre.dataset.service = svc;
    if (atEnd) pre.scrollTop = pre.scrollHeight;
  } catch (e) {
    pre.textContent = `cannot read the logs: ${e.message}`;
  } finally {
    ui.logsBusy = false;
  }
}

function showLogs(name) {
  $('log-service').value = name;
  $('log-instance').value = '';
  if (ui.status) updateLogChoices(ui.status);
  refreshLogs();
}

$('app').addEventListener('change', (e) => selectApp(e.target.value));
$('log-service').addEventListener('change', () => { if (ui.status) updateLogChoices(ui.status); refreshLogs(); });
$('log-instance').addEventListener('change', refreshLogs);
$('log-refresh').addEventListener('click', refreshLogs);
$('signout').addEventListener('click', () => signOut());

/** Starts polling once a token is there; the timers run from then on and skip while signed out. */
function start() {
  $('signin').hidden = true;
  $('auth').textContent = 'signed in';
  if (ui.started) return loadApps().then(followEvents);
  ui.started = true;
  loadApps();
  setInterval(() => token && loadApps(), 10000);
  setInterval(() => { if (token && $('log-follow').checked) refreshLogs(); }, 2000);
  poll();
}
if (token) start(); else signOut();
