// Drives the Slipway dashboard in headless Chromium; crates/slipway/tests/dashboard.rs runs it.
//
// Usage: node dashboard.mjs <admin-url> <token> <router-url> <artifact-dir>
//
// The app `clinic` must already be up, with api at revision 2 and revision 1 still
// ready. The script opens the dashboard, is asked for a token, signs in with a wrong one
// (refused) and then with <token> (a deployer's), and checks that the three services are
// listed. It sends load to api through the router and checks that the req/s chart
// rises. It then rolls api back with a click and checks that the page shows revision 1
// at 100 %, and the event log names the token as the rollback's actor. Screenshots go to <artifact-dir>. The script exits 0 when every check passed.
// Otherwise it prints the failed check (and saves failure.png) and exits 1.
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const [adminUrl, token, routerUrl, artifacts] = process.argv.slice(2);
if (!artifacts) {
  console.error('usage: node dashboard.mjs <admin-url> <token> <router-url> <artifact-dir>');
  process.exit(2);
}
const CHROMIUM = process.env.SLIPWAY_CHROMIUM || '/usr/bin/chromium';
const STEP_MS = 20000; // No single wait for the page takes longer than this.
const ROLLBACK_MS = 90000; // A rollback to a cold revision first starts it (startup_timeout 30 s).
const BASELINE_Y = 38; // Where a zero value sits in a chart (H - PAD in app.js).

// If anything hangs, the script still ends within four minutes, so the Rust test never waits forever.
setTimeout(() => {
  console.error('FAIL: the browser test did not finish within 240 s');
  process.exit(1);
}, 240000).unref();

const step = (name) => console.log(`step: ${name}`);
function check(ok, what) {
  if (!ok) throw new Error(what);
}

/** Sends GETs on 4 keep-alive connections for `ms` milliseconds, at most 20000 in all. */
async function load(host, path, ms) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 4 });
  const url = new URL(path, routerUrl);
  const until = Date.now() + ms;
  const counts = { ok: 0, failed: 0, sample: '' };
  const one = () => new Promise((resolve) => {
    const req = http.get({ hostname: url.hostname, port: url.port, path: url.pathname, headers: { Host: host }, agent, timeout: 5000 },
      (res) => {
        res.resume();
        res.on('end', () => {
          if (res.statusCode === 200) counts.ok++;
          else { counts.failed++; counts.sample = `status ${res.statusCode}`; }
          resolve();
        });
      });
    req.on('timeout', () => req.destroy(new Error('no answer within 5 s')));
    req.on('error', (e) => { counts.failed++; counts.sample = e.message; resolve(); });
  });
  await Promise.all([0, 1, 2, 3].map(async () => {
    while (Date.now() < until && counts.ok + counts.failed < 20000) await one();
  }));
  agent.destroy();
  return counts;
}

/** The api card's req/s chart: its recorded values, its polyline and the number beside it. */
const rpsChart = (page) => page.evaluate(() => {
  const fig = document.querySelector('article[data-service="api"] figure[data-metric="rps"]');
  return {
    values: (fig.querySelector('svg').dataset.values || '').split(' ').filter(Boolean).map(Number),
    points: fig.querySelector('polyline').getAttribute('points'),
    shown: fig.querySelector('.value').textContent,
  };
});

const userDataDir = mkdtempSync(join(tmpdir(), 'slipway-chromium-'));
mkdirSync(artifacts, { recursive: true });
const problems = []; // Script errors and console errors on the page: each one fails the test.
let context;
let page;
try {
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    timeout: 30000,
    viewport: { width: 1440, height: 1000 },
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage'],
  });
  page = context.pages()[0] ?? await context.newPage();
  page.setDefaultTimeout(STEP_MS);
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  // The one refused request is the wrong token's, on purpose; Chromium logs it as an error.
  page.on('console', (m) => {
    if (m.type() === 'error' && !m.text().includes('status of 401')) problems.push(`console error: ${m.text()}`);
  });

  step('open the dashboard: it asks for a token');
  await page.goto(`${adminUrl}/`);
  await page.locator('#signin').waitFor();
  check(await page.locator('article').count() === 0, 'the page shows services before it has a token');

  step('a wrong token is refused with the server\'s message');
  await page.fill('#token', 'slp_0000000000000000_0000000000000000000000000000000000000000000000000000000000000000');
  await page.click('#signin button[type="submit"]');
  await page.waitForFunction(() => document.getElementById('signin-error').textContent.includes('not valid'));
  check(await page.evaluate(() => sessionStorage.getItem('slipway-token')) === null, 'a refused token was kept');

  step('sign in with the token');
  await page.fill('#token', token);
  await page.click('#signin button[type="submit"]');
  for (const svc of ['web', 'api', 'notify']) await page.locator(`article[data-service="${svc}"]`).waitFor();
  check(await page.locator('#signin').isHidden(), 'the sign-in form stays after signing in');
  check(await page.evaluate(() => sessionStorage.getItem('slipway-token')) === token, 'the token is not in sessionStorage');
  check(!page.url().includes(token), 'the token is in the address bar');
  // A reload keeps the tab signed in.
  await page.reload();
  await page.locator('article[data-service="api"]').waitFor();
  const api = page.locator('article[data-service="api"]');
  await page.waitForFunction(() => document.querySelector('article[data-service="api"] .traffic').dataset.split === '2:100');
  await api.locator('.instances tbody tr').first().waitFor();
  await api.locator('.revisions tr[data-revision="1"]').waitFor();
  const memory = await api.locator('.instances tbody tr td.usage').nth(1).textContent();
  check(/^\d+\.\d MiB/.test(memory), `the instance's memory cell reads "${memory}", not its usage from the cgroup`);

  step('record the req/s chart before any traffic');
  await page.waitForFunction(() => (document.querySelector('article[data-service="api"] figure[data-metric="rps"] svg')
    .dataset.values || '').split(' ').length >= 3);
  const before = await rpsChart(page);
  check(before.values.every((v) => v === 0), `api shows traffic before the test sent any: ${before.values}`);
  await page.screenshot({ path: join(artifacts, '1-overview.png'), fullPage: true });

  step('send load to api through the router for 4 s');
  const sent = await load('api.clinic.localhost', '/api/patients', 4000);
  check(sent.ok > 0 && sent.failed === 0, `load through the router: ${JSON.stringify(sent)}`);

  step('the req/s chart and number rise');
  await page.waitForFunction(() => {
    const fig = document.querySelector('article[data-service="api"] figure[data-metric="rps"]');
    const values = (fig.querySelector('svg').dataset.values || '').split(' ').map(Number);
    return values.some((v) => v > 0) && parseFloat(fig.querySelector('.value').textContent) > 0;
  });
  const after = await rpsChart(page);
  check(after.points !== before.points, 'the req/s polyline did not change');
  const highest = Math.min(...after.points.split(' ').map((p) => Number(p.split(',')[1])));
  check(highest < BASELINE_Y, `the req/s polyline stays on the baseline: ${after.points}`);
  await page.waitForFunction(() => document.querySelector('article[data-service="api"] figure[data-metric="latency"] .value')
    .textContent.split(' / ').every((v) => v !== '' && !Number.isNaN(Number(v))));
  await page.screenshot({ path: join(artifacts, '2-under-load.png'), fullPage: true });

  step('tail the logs of api');
  await api.locator('button.show-logs').click();
  await page.waitForFunction(() => {
    const pre = document.getElementById('logs');
    return pre.dataset.service === 'api' && / api-r\d+-\S+ [|!] /.test(pre.textContent);
  });

  step('roll api back with two clicks');
  const button = api.locator('button.rollback');
  await button.click();
  check(await button.textContent() === 'Confirm?', 'the first click did not ask for a confirmation');
  await button.click();
  await page.waitForFunction(() => document.querySelector('article[data-service="api"] .op').dataset.done, null,
    { timeout: ROLLBACK_MS });
  const op = await api.locator('.op').textContent();
  check(await api.locator('.op').getAttribute('data-done') === 'ok', `the rollback failed:\n${op}`);
  check(op.includes('switched api to revision 1 (was 2)'), `the rollback's progress is not shown:\n${op}`);

  step('the page shows revision 1 at 100 %');
  await page.waitForFunction(() => document.querySelector('article[data-service="api"] .traffic').dataset.split === '1:100');
  const traffic = await api.locator('.traffic').textContent();
  check(traffic === 'revision 1 · 100 %', `the traffic bar reads ${JSON.stringify(traffic)}`);
  await page.waitForFunction(() => [...document.querySelectorAll('#events li[data-kind="traffic.changed"]')]
    .some((li) => li.textContent.includes('rollback') && li.textContent.includes('r1=100%')));
  await page.waitForFunction(() => [...document.querySelectorAll('#events li[data-kind="api.request"]')]
    .some((li) => li.textContent.includes('/services/api/rollback') && li.textContent.includes('by dashboard')));
  await page.screenshot({ path: join(artifacts, '3-rolled-back.png'), fullPage: true });

  check(problems.length === 0, `the page reported errors:\n${problems.join('\n')}`);
  console.log(`ok: ${sent.ok} requests sent; req/s chart ${before.values.length} -> ${after.values.length} points, shown ${after.shown}`);
} catch (e) {
  console.error(`FAIL: ${e.message}`);
  if (problems.length) console.error(`page problems:\n${problems.join('\n')}`);
  if (page) await page.screenshot({ path: join(artifacts, 'failure.png'), fullPage: true }).catch(() => {});
  process.exitCode = 1;
} finally {
  await context?.close().catch(() => {});
  rmSync(userDataDir, { recursive: true, force: true });
}
