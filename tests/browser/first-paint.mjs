// Measures the dashboard's first paint with 10,000 devices registered (issue 7's target:
// under 1 s on loopback). Registers the devices through the API, then loads the device
// list and the overview in a fresh browser profile (cold cache) several times, and prints
// first-contentful-paint, and when the first page of devices was on screen, as JSON.
//
// Usage: node first-paint.mjs [--devices 10000] [--runs 5]   (FLEETWIRE_BIN picks the binary)

import {startServer, launchBrowser, must, screenshot} from './harness.mjs';

const options = {devices: 10_000, runs: 5};
for (let index = 2; index < process.argv.length; index += 2) {
  const name = process.argv[index].replace(/^--/, '');
  if (!(name in options)) throw new Error(`unknown option ${process.argv[index]}: expected --devices N or --runs N`);
  options[name] = Number(process.argv[index + 1]);
}
const CONCURRENCY = 16;

const median = (values) => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
};

const server = await startServer();
try {
  const started = Date.now();
  let next = 0;
  await Promise.all(Array.from({length: CONCURRENCY}, async () => {
    while (next < options.devices) {
      const number = next++;
      await must(server, 'POST', '/devices', {
        id: `dev-${String(number).padStart(5, '0')}`, type: number % 3 ? 'sensor' : 'gateway',
        labels: {site: `site-${number % 20}`},
      });
    }
  }));
  const registration = Date.now() - started;
  const results = {};
  for (const [name, hash, ready] of [
    ['device_list', '#/devices', 'table.list tbody tr'],
    ['overview', '#/', '.stat .big, .stat p.muted'],
  ]) {
    const paints = [];
    const readies = [];
    for (let run = 0; run < options.runs; run += 1) {
      const browser = await launchBrowser();
      try {
        await browser.context.addInitScript((token) => localStorage.setItem('fleetwire.token', token), server.token);
        const page = await browser.context.newPage();
        await page.goto(`${server.base}/${hash}`, {waitUntil: 'load'});
        await page.locator(ready).first().waitFor({timeout: 10_000});
        const timing = await page.evaluate((selector) => new Promise((resolve) => {
          // The paint entry is there once the page painted; ready time is measured from navigation start.
          const paint = performance.getEntriesByName('first-contentful-paint')[0];
          const navigation = performance.getEntriesByType('navigation')[0];
          resolve({
            fcp: paint ? paint.startTime : null,
            domContentLoaded: navigation.domContentLoadedEventEnd,
            load: navigation.loadEventEnd,
            readyAt: performance.now(),
            hasContent: Boolean(document.querySelector(selector)),
          });
        }), ready);
        paints.push(timing.fcp);
        readies.push(timing.readyAt);
        if (run === 0) await screenshot(page, `first-paint-${name}`, {fullPage: false});
      } finally {
        await browser.close();
      }
    }
    results[name] = {
      first_contentful_paint_ms: {median: Math.round(median(paints)), max: Math.round(Math.max(...paints)), runs: paints.map(Math.round)},
      content_ready_ms_upper_bound: {median: Math.round(median(readies)), runs: readies.map(Math.round)},
    };
  }
  console.log(JSON.stringify({
    devices_registered: options.devices,
    registration_ms: registration,
    dashboard_served_by: 'fleetwire',
    ...results,
  }, null, 2));
} finally {
  await server.stop();
}
