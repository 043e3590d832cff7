// The dashboard in a real browser (Debian's Chromium through playwright-core) against the
// real binary: log in, browse devices, watch a chart follow live telemetry, send a
// command and see its result, acknowledge an alarm raised by a rule, and get expression
// errors at their column. Screenshots go to target/browser-screenshots/.
//
// Run: scripts/test-browser (or, with the binary built: cd tests/browser && npm test).

import {test, before, after} from 'node:test';
import assert from 'node:assert/strict';
import {
  startServer, launchBrowser, must, mqttPublish, mqttSubscribe, screenshot, unlabelledControls,
} from './harness.mjs';

const WAIT_MS = 15_000;
let server;
let browser;
let page;

/** Fails with a message naming the missing endpoint instead of a bare status. */
function needs(result, endpoint) {
  if (result.status === 404 || result.status === 405) {
    assert.fail(`needs ${endpoint}, which this server does not have yet (${result.status})`);
  }
  return result;
}

before(async () => {
  server = await startServer();
  for (const [id, type, labels] of [
    ['thermo-1', 'thermometer', {site: 'lyon', floor: '2'}],
    ['thermo-2', 'thermometer', {site: 'lyon', floor: '3'}],
    ['pump-1', 'pump', {site: 'nantes'}],
  ]) {
    await must(server, 'POST', '/devices', {id, name: `${id} sensor`, type, labels});
  }
  // Enough devices for a second page (the list shows 50 a page).
  const more = Array.from({length: 60}, (_, index) => `fill-${String(index).padStart(3, '0')}`);
  await Promise.all(more.map((id) => must(server, 'POST', '/devices', {id, type: 'filler'})));
  browser = await launchBrowser();
  page = await browser.context.newPage();
  page.on('pageerror', (error) => console.error(`page error: ${error.message}`));
  page.on('console', (message) => {
    if (message.type() === 'error') console.error(`console: ${message.text()}`);
  });
});

after(async () => {
  if (browser) await browser.close();
  if (server) {
    if (process.env.SHOW_SERVER_LOG) console.error(server.log.join('\n'));
    await server.stop();
  }
});

test('a wrong token is refused with a clear message, the admin token logs in', async () => {
  await page.goto(`${server.base}/`);
  await page.getByRole('heading', {name: 'Log in to Fleetwire'}).waitFor();
  assert.deepEqual(await unlabelledControls(page), []);
  await page.getByLabel('API token').fill('not-a-token');
  await page.getByRole('button', {name: 'Log in'}).click();
  const error = page.locator('.field-error');
  await error.filter({hasText: '401'}).waitFor({timeout: WAIT_MS});
  assert.match(await error.textContent(), /refused \(401\)/);
  await screenshot(page, '01-login-refused');

  await page.getByLabel('API token').fill(server.token);
  await page.getByLabel('API token').press('Enter');
  await page.getByRole('heading', {name: 'Fleet overview'}).waitFor({timeout: WAIT_MS});
  assert.equal(await page.evaluate(() => localStorage.getItem('fleetwire.token')), server.token);
  await page.getByRole('navigation', {name: 'Main'}).waitFor();
  await page.waitForTimeout(500);
  await screenshot(page, '02-overview');
});

test('the overview counts the registered devices', async () => {
  await page.goto(`${server.base}/#/`);
  const registered = page.locator('dl.pairs dt', {hasText: 'Registered'}).locator('xpath=following-sibling::dd[1]');
  await registered.waitFor({timeout: WAIT_MS}).catch(() => {});
  const text = await page.locator('main').textContent();
  assert.ok(!text.includes('does not report fleet totals'), 'needs GET /api/v1/overview, which this server does not have yet');
  assert.equal((await registered.textContent()).replace(/\D/g, ''), '63');
});

test('the device list pages through devices and searches by id prefix', async () => {
  await page.getByRole('link', {name: 'Devices'}).first().click();
  await page.getByRole('heading', {name: 'Devices', level: 1}).waitFor();
  const rows = page.locator('table.list tbody tr');
  await rows.first().waitFor({timeout: WAIT_MS});
  assert.equal(await rows.count(), 50);
  assert.deepEqual(await unlabelledControls(page), []);
  await screenshot(page, '03-devices');

  await page.getByRole('button', {name: 'Next →'}).click();
  await page.getByText('Devices 51–63.').waitFor({timeout: WAIT_MS});
  assert.equal(await rows.count(), 13);
  await page.getByRole('button', {name: '← Previous'}).click();
  await page.getByText('Devices 1–50, more on the next page.').waitFor({timeout: WAIT_MS});

  await page.getByLabel('Type', {exact: true}).fill('thermometer');
  await page.getByText('Devices 1–2.').waitFor({timeout: WAIT_MS});
  await page.getByLabel('Type', {exact: true}).fill('');
  await page.getByLabel('Label', {exact: true}).fill('site:nantes');
  await page.getByText('Devices 1–1.').waitFor({timeout: WAIT_MS});
  assert.equal(await rows.first().locator('a').textContent(), 'pump-1');
  await page.getByLabel('Label', {exact: true}).fill('');

  await page.getByLabel('Search by id').fill('thermo');
  const problem = page.locator('.notice.error');
  await Promise.race([
    page.getByText('Devices 1–2.').waitFor({timeout: WAIT_MS}),
    problem.waitFor({timeout: WAIT_MS}),
  ]);
  if (await problem.count()) assert.fail(`needs GET /api/v1/devices?prefix=: ${await problem.textContent()}`);
  assert.deepEqual(await rows.locator('td a').allTextContents(), ['thermo-1', 'thermo-2']);
  await screenshot(page, '03-devices-search');
});

test('the device page charts history and follows live telemetry', async () => {
  // A few minutes of history for the chart, over HTTP.
  const now = Date.now();
  const rows = Array.from({length: 30}, (_, index) => ({
    ts: now - (30 - index) * 10_000, temperature: 20 + Math.sin(index / 4), humidity: 40 + index / 10,
  }));
  needs(await server.call('POST', '/devices/thermo-1/telemetry', rows), 'POST /api/v1/devices/{id}/telemetry');
  await page.goto(`${server.base}/#/devices?type=thermometer`);
  await page.locator('table.list a', {hasText: 'thermo-1'}).click();
  await page.getByRole('heading', {name: 'thermo-1 sensor'}).waitFor({timeout: WAIT_MS});
  const chart = page.locator('figure.chart[data-field="temperature"]');
  await chart.waitFor({timeout: WAIT_MS});
  const plot = chart.locator('.plot');
  const pointsOf = async () => Number(/: (\d+) points/.exec(await plot.getAttribute('aria-label'))[1]);
  const before = await pointsOf();
  assert.ok(before >= 30, `the history has the 30 posted points, the chart ${before}`);
  assert.deepEqual(await unlabelledControls(page), []);

  // The stream must be up before new data is sent, or the point would only come with a refetch.
  await page.locator('#stream-state[data-state="live"]').waitFor({timeout: WAIT_MS})
    .catch(() => assert.fail('needs the live stream GET /api/v1/stream (the dashboard never connected)'));
  for (const value of [27.5, 28.25, 29.125]) {
    await mqttPublish(server, 'devices/thermo-1/telemetry', JSON.stringify({temperature: value, humidity: 45}));
  }
  await page.locator('tr[data-field="temperature"] td.number', {hasText: '29.125'}).waitFor({timeout: WAIT_MS});
  await page.waitForFunction(
    ([selector, count]) => {
      const label = document.querySelector(selector)?.getAttribute('aria-label') || '';
      const match = /: (\d+) points/.exec(label);
      return match && Number(match[1]) >= count;
    },
    ['figure.chart[data-field="temperature"] .plot', before + 3],
    {timeout: WAIT_MS},
  );
  await page.waitForTimeout(300);
  await screenshot(page, '04-device-live');

  // A longer range switches to aggregated history.
  await page.locator('label.segment', {hasText: '24 h'}).click();
  await page.getByText('Last 24 h, averages over 2 min, live.').waitFor({timeout: WAIT_MS});
  await chart.waitFor();
  await screenshot(page, '05-device-24h', {fullPage: false});
});

test('the device page shows reported attributes and the last rejected message', async () => {
  await mqttPublish(server, 'devices/pump-1/attributes', JSON.stringify({firmware: '1.2.0', rpm_max: 3000}));
  await mqttPublish(server, 'devices/pump-1/telemetry', '{"pressure": 1.5,');
  await page.goto(`${server.base}/#/devices/pump-1`);
  await page.getByRole('heading', {name: 'pump-1 sensor'}).waitFor({timeout: WAIT_MS});
  await page.locator('tr', {hasText: 'firmware'}).filter({hasText: '1.2.0'}).waitFor({timeout: WAIT_MS});
  const warning = page.locator('.notice.warning', {hasText: 'Last rejected message'});
  await warning.waitFor({timeout: WAIT_MS});
  assert.match(await warning.textContent(), /mqtt/i);
  await screenshot(page, '05-device-ingest-error', {fullPage: false});
});

test('a command sent from the device page shows its status as the device answers', async () => {
  await page.goto(`${server.base}/#/devices/thermo-1`);
  await page.getByRole('heading', {name: 'thermo-1 sensor'}).waitFor({timeout: WAIT_MS});
  // Play the device: wait for the command on its topic, then answer it.
  const device = mqttSubscribe(server, 'devices/thermo-1/commands/+', {clientId: 'thermo-1'});
  await new Promise((resolve) => setTimeout(resolve, 500));
  await page.getByLabel('Name', {exact: true}).fill('reboot');
  await page.getByLabel('Parameters (JSON object)').fill('{"delay_s": 1');
  await page.getByRole('button', {name: 'Send command'}).click();
  await page.getByText('Not a JSON object').waitFor();
  await page.getByLabel('Parameters (JSON object)').fill('{"delay_s": 1}');
  await page.getByRole('button', {name: 'Send command'}).click();

  const row = page.locator('tr[data-command]').first();
  const failure = page.locator('.command-form .notice.error');
  await Promise.race([row.waitFor({timeout: WAIT_MS}), failure.waitFor({timeout: WAIT_MS})]);
  if (await failure.count()) assert.fail(`needs POST /api/v1/devices/{id}/commands: ${await failure.textContent()}`);
  await screenshot(page, '06-command-sent');

  const [[topic, payload]] = await device.done;
  const command = topic.split('/')[3];
  assert.equal(JSON.parse(payload).name, 'reboot');
  assert.equal(await row.getAttribute('data-command'), command);
  await mqttPublish(server, `devices/thermo-1/commands/${command}/response`, JSON.stringify({status: 'ok', result: {rebooted: true}}));
  await page.locator(`tr[data-command="${command}"][data-status="succeeded"]`).waitFor({timeout: WAIT_MS});
  assert.match(await row.textContent(), /rebooted/);
  await screenshot(page, '07-command-succeeded');
});

test('an alarm raised by a rule appears live and can be acknowledged', async () => {
  needs(await server.call('POST', '/rules', {
    name: 'Too hot', match: {devices: ['thermo-2']}, condition: 'temperature > 30', severity: 'high', actions: [{type: 'alarm'}],
  }), 'POST /api/v1/rules');
  await page.getByRole('link', {name: 'Alarms'}).click();
  await page.getByRole('heading', {name: 'Alarms', level: 1}).waitFor();
  const listFailure = page.locator('.notice.error');
  await page.locator('#stream-state[data-state="live"]').waitFor({timeout: WAIT_MS})
    .catch(() => assert.fail('needs the live stream GET /api/v1/stream'));
  if (await listFailure.count()) assert.fail(`needs GET /api/v1/alarms: ${await listFailure.textContent()}`);

  await must(server, 'POST', '/devices/thermo-2/telemetry', {temperature: 35.5});
  const row = page.locator('tr[data-alarm]', {hasText: 'Too hot'});
  await row.waitFor({timeout: WAIT_MS});
  assert.equal(await row.getAttribute('data-status'), 'active');
  assert.match(await row.textContent(), /temperature 35\.5/);
  assert.deepEqual(await unlabelledControls(page), []);
  await screenshot(page, '08-alarm-active');

  await row.getByRole('button', {name: 'Acknowledge Too hot on thermo-2'}).click();
  await page.locator('tr[data-alarm][data-status="acknowledged"]', {hasText: 'Too hot'}).waitFor({timeout: WAIT_MS});
  const alarms = await must(server, 'GET', '/alarms?device=thermo-2');
  assert.equal(alarms.items[0].status, 'acknowledged');
  // The list filters on active alarms: switching to acknowledged shows it there.
  await page.getByLabel('Status', {exact: true}).selectOption('acknowledged');
  await page.locator('tr[data-alarm][data-status="acknowledged"]', {hasText: 'Too hot'}).waitFor({timeout: WAIT_MS});
  await screenshot(page, '09-alarm-acknowledged');
});

test('the rule form shows an expression error next to the field, at its column', async () => {
  await page.goto(`${server.base}/#/rules/new`);
  await page.getByRole('heading', {name: 'New rule'}).waitFor();
  assert.deepEqual(await unlabelledControls(page), []);
  await page.getByLabel('Name', {exact: true}).fill('Battery low');
  await page.getByLabel('Severity').selectOption('medium');
  await page.getByLabel('Device type').fill('thermometer');
  await page.getByLabel('Raise when').fill('battery < < 15');
  await page.getByLabel('For', {exact: true}).fill('30s');
  await page.getByRole('button', {name: 'Create rule'}).click();
  const error = page.locator('.field-error').filter({hasText: 'column'});
  await Promise.race([error.waitFor({timeout: WAIT_MS}), page.locator('.notice.error').waitFor({timeout: WAIT_MS})]);
  if (await page.locator('.notice.error').count()) {
    assert.fail(`expected the error next to the condition, got: ${await page.locator('.notice.error').textContent()}`);
  }
  assert.match(await error.textContent(), /condition: at column 11/);
  assert.equal(await page.locator('.expr-marker mark').textContent(), '<');
  assert.equal(await page.getByLabel('Raise when').getAttribute('aria-invalid'), 'true');
  await screenshot(page, '10-rule-error');

  await page.getByLabel('Raise when').fill('battery < 15');
  await page.getByRole('button', {name: 'Create rule'}).click();
  await page.getByRole('heading', {name: 'Rules', level: 1}).waitFor({timeout: WAIT_MS});
  const row = page.locator('tr[data-rule]', {hasText: 'Battery low'});
  await row.waitFor({timeout: WAIT_MS});
  assert.match(await row.textContent(), /type thermometer/);
  await screenshot(page, '11-rules');

  // Edit it: the form comes back filled in.
  await row.getByRole('link', {name: 'Edit rule Battery low'}).click();
  await page.getByRole('heading', {name: 'Edit rule'}).waitFor();
  await page.waitForFunction(() => document.querySelector('input[name="condition"]')?.value === 'battery < 15');
  assert.equal(await page.getByLabel('For', {exact: true}).inputValue(), '30s');
  await page.getByLabel('Severity').selectOption('low');
  await page.getByRole('button', {name: 'Save changes'}).click();
  await page.locator('tr[data-rule]', {hasText: 'Battery low'}).filter({hasText: 'low'}).waitFor({timeout: WAIT_MS});
});

test('the pages work from the keyboard', async () => {
  await page.goto('about:blank');
  await page.goto(`${server.base}/#/`);
  await page.getByRole('heading', {name: 'Fleet overview'}).waitFor();
  await page.locator('.events li').first().waitFor({timeout: WAIT_MS}).catch(() => {});
  await screenshot(page, '12-overview-with-alarms');
  await page.keyboard.press('Tab');
  assert.equal(await page.evaluate(() => document.activeElement.textContent), 'Skip to content');
  await page.keyboard.press('Enter');
  assert.equal(await page.evaluate(() => document.activeElement.id), 'main');
  assert.equal(await page.evaluate(() => location.hash), '#/');
  // From the top again: skip link, brand, then the navigation.
  await page.goto('about:blank');
  await page.goto(`${server.base}/#/`);
  await page.getByRole('heading', {name: 'Fleet overview'}).waitFor();
  for (let presses = 0; presses < 3; presses += 1) await page.keyboard.press('Tab');
  assert.equal(await page.evaluate(() => document.activeElement.textContent), 'Overview');
  await page.keyboard.press('Tab');
  await page.keyboard.press('Enter');
  await page.getByRole('heading', {name: 'Devices', level: 1}).waitFor();
  // Focus moved to the new page's heading, so the next Tab continues inside the page.
  assert.equal(await page.evaluate(() => document.activeElement.tagName), 'H1');
  const outline = await page.evaluate(() => {
    const link = document.querySelector('nav a');
    link.focus();
    return getComputedStyle(link).outlineStyle;
  });
  assert.notEqual(outline, 'none', 'focused links show an outline');
});

test('log out forgets the token', async () => {
  await page.getByRole('button', {name: 'Log out'}).click();
  await page.getByRole('heading', {name: 'Log in to Fleetwire'}).waitFor();
  assert.equal(await page.evaluate(() => localStorage.getItem('fleetwire.token')), null);
});
