// MQTT over WebSocket from a real browser: Debian's Chromium (playwright-core) opens the
// dashboard the binary serves over HTTPS (the development PKI of `fleetwire cert init`,
// its server certificate trusted by SPKI pin, not by ignoring every certificate error) and
// over plain HTTP, injects MQTT.js (npm `mqtt`, its browser bundle, under the page's CSP), and connects to
// wss://…/mqtt and ws://…/mqtt with MQTT 3.1.1 and 5.0. Messages go both ways between the
// page and mosquitto_pub/mosquitto_sub over TCP (plain and TLS).
//
// Run: scripts/test-browser (or, with the binary built: cd tests/browser && npm test).

import {test, before, after} from 'node:test';
import assert from 'node:assert/strict';
import {X509Certificate, createHash, randomUUID} from 'node:crypto';
import {readFile} from 'node:fs/promises';
import {existsSync} from 'node:fs';
import {fileURLToPath} from 'node:url';
import {startServer, launchBrowser, mqttPublish, mqttSubscribed, run, screenshot} from './harness.mjs';

const WAIT_MS = 15_000;
// The browser bundle of MQTT.js (package `mqtt`, pinned in package.json; its exports map does not expose dist/).
const MQTT_BUNDLE = fileURLToPath(new URL('./node_modules/mqtt/dist/mqtt.min.js', import.meta.url));
let server;
let browser;

/** base64(SHA-256(SubjectPublicKeyInfo)) of a PEM certificate: what Chromium's
 * --ignore-certificate-errors-spki-list takes. */
async function spkiPin(pemFile) {
  const certificate = new X509Certificate(await readFile(pemFile));
  const spki = certificate.publicKey.export({type: 'spki', format: 'der'});
  return createHash('sha256').update(spki).digest('base64');
}

before(async () => {
  if (!existsSync(MQTT_BUNDLE)) throw new Error(`no ${MQTT_BUNDLE}: run npm ci in tests/browser`);
  server = await startServer({tls: true});
  browser = await launchBrowser({args: [`--ignore-certificate-errors-spki-list=${await spkiPin(server.serverCertFile)}`]});
});

after(async () => {
  if (browser) await browser.close();
  if (server) {
    if (process.env.SHOW_SERVER_LOG) console.error(server.log.join('\n'));
    await server.stop();
  }
});

/**
 * A new page at `url` (the dashboard) with MQTT.js loaded; page errors are printed. The
 * dashboard's Content-Security-Policy (script-src 'self', connect-src 'self') forbids inline
 * scripts, so the bundle is not inlined (addScriptTag({path})) and the CSP is not bypassed:
 * the page loads it from a same-origin URL that the test answers with the npm file. The
 * WebSocket then has to pass connect-src 'self' like the dashboard's own would.
 */
async function pageWithMqtt(url) {
  const page = await browser.context.newPage();
  page.on('pageerror', (error) => console.error(`page error: ${error.message}`));
  const bundleUrl = new URL('/__browser-test__/mqtt.min.js', url).href;
  await page.route(bundleUrl, (route) => route.fulfill({path: MQTT_BUNDLE, contentType: 'text/javascript'}));
  const response = await page.goto(url);
  assert.ok(response.ok(), `${url}: ${response.status()}`);
  await page.getByRole('heading', {name: 'Log in to Fleetwire'}).waitFor({timeout: WAIT_MS});
  await page.addScriptTag({url: bundleUrl});
  assert.equal(await page.evaluate(() => typeof window.mqtt?.connect), 'function', 'MQTT.js did not load');
  return {page, response};
}

/**
 * Connects MQTT.js in the page to `brokerUrl`, subscribes to `topic` (QoS 1) and records
 * what arrives in window.received[clientId]. Resolves to what the page saw of the CONNACK
 * and SUBACK, or rejects with the client's error.
 */
function connectInPage(page, {brokerUrl, protocolVersion, clientId, topic}) {
  return page.evaluate(({brokerUrl, protocolVersion, clientId, topic}) => new Promise((resolve, reject) => {
    window.clients = window.clients || {};
    window.received = window.received || {};
    window.received[clientId] = [];
    const client = window.mqtt.connect(brokerUrl, {protocolVersion, clientId, reconnectPeriod: 0, connectTimeout: 10_000, clean: true});
    window.clients[clientId] = client;
    client.on('message', (messageTopic, payload, packet) => {
      window.received[clientId].push({topic: messageTopic, payload: new TextDecoder().decode(payload), qos: packet.qos});
    });
    client.once('error', (error) => reject(new Error(`MQTT.js: ${error.message}`)));
    client.once('close', () => reject(new Error('MQTT.js: connection closed before SUBACK')));
    client.once('connect', (connack) => {
      client.subscribe(topic, {qos: 1}, (error, granted) => {
        if (error) reject(new Error(`subscribe: ${error.message}`));
        else resolve({protocol: location.protocol, connackCode: connack.reasonCode ?? connack.returnCode ?? 0, granted: granted.map((entry) => entry.qos)});
      });
    });
  }), {brokerUrl, protocolVersion, clientId, topic});
}

/** Publishes from the page's client; resolves once MQTT.js reports the QoS 1 flow done. */
function publishInPage(page, clientId, topic, payload) {
  return page.evaluate(({clientId, topic, payload}) => new Promise((resolve, reject) => {
    window.clients[clientId].publish(topic, payload, {qos: 1}, (error) => (error ? reject(error) : resolve()));
  }), {clientId, topic, payload});
}

function receivedInPage(page, clientId, count) {
  return page.waitForFunction(({clientId, count}) => window.received[clientId].length >= count, {clientId, count}, {timeout: WAIT_MS})
    .then(() => page.evaluate((clientId) => window.received[clientId], clientId));
}

function endInPage(page, clientId) {
  return page.evaluate((clientId) => new Promise((resolve) => window.clients[clientId].end(false, {}, resolve)), clientId);
}

test('the dashboard is served over HTTPS with the development certificate', async () => {
  const {page, response} = await pageWithMqtt(`${server.https}/`);
  const security = await response.securityDetails();
  assert.ok(security, 'no TLS details for an https:// page');
  assert.match(security.protocol, /TLS 1\.[23]/);
  assert.match(security.issuer, /Fleetwire development CA/);
  await screenshot(page, 'mqtt-wss-dashboard');
  await page.close();
});

for (const [protocolVersion, name] of [[4, '3.1.1'], [5, '5.0']]) {
  test(`MQTT ${name} over wss:// from the HTTPS page: messages both ways with TCP and TLS clients`, async () => {
    const {page} = await pageWithMqtt(`${server.https}/`);
    const prefix = `browser/${randomUUID().slice(0, 8)}`;
    const clientId = `page-wss-${protocolVersion}-${randomUUID().slice(0, 6)}`;
    const seen = await connectInPage(page, {
      brokerUrl: `wss://localhost:${server.httpsPort}/mqtt`, protocolVersion, clientId, topic: `${prefix}/to-page/#`,
    });
    assert.deepEqual(seen, {protocol: 'https:', connackCode: 0, granted: [1]});

    // mosquitto_pub over plain TCP and over TLS (trusting the dev CA) → the page.
    await mqttPublish(server, `${prefix}/to-page/tcp`, 'from mosquitto over tcp');
    await run('mosquitto_pub', [
      '-h', 'localhost', '-p', String(server.mqttsPort), '--cafile', server.caFile, '-q', '1',
      '-t', `${prefix}/to-page/tls`, '-m', 'from mosquitto over tls',
    ]);
    const received = await receivedInPage(page, clientId, 2);
    assert.deepEqual(received, [
      {topic: `${prefix}/to-page/tcp`, payload: 'from mosquitto over tcp', qos: 1},
      {topic: `${prefix}/to-page/tls`, payload: 'from mosquitto over tls', qos: 1},
    ]);

    // The page → mosquitto_sub over TCP.
    const subscriber = await mqttSubscribed(server, `${prefix}/from-page`, {count: 1});
    await publishInPage(page, clientId, `${prefix}/from-page`, `hello from ${name} over wss`);
    assert.deepEqual(await subscriber.done, [[`${prefix}/from-page`, `hello from ${name} over wss`]]);

    await endInPage(page, clientId);
    await page.close();
  });
}

for (const [protocolVersion, name] of [[4, '3.1.1'], [5, '5.0']]) {
  test(`MQTT ${name} over ws:// from the plain-HTTP dashboard page`, async () => {
    const {page} = await pageWithMqtt(`${server.base}/`);
    const prefix = `browser/${randomUUID().slice(0, 8)}`;
    const clientId = `page-ws-${protocolVersion}-${randomUUID().slice(0, 6)}`;
    const host = new URL(server.base).host;
    const seen = await connectInPage(page, {brokerUrl: `ws://${host}/mqtt`, protocolVersion, clientId, topic: `${prefix}/to-page/#`});
    assert.deepEqual(seen, {protocol: 'http:', connackCode: 0, granted: [1]});
    await mqttPublish(server, `${prefix}/to-page/tcp`, `to the page over ws ${name}`);
    assert.deepEqual(await receivedInPage(page, clientId, 1), [
      {topic: `${prefix}/to-page/tcp`, payload: `to the page over ws ${name}`, qos: 1},
    ]);
    // The page's own message comes back to it through the broker.
    await publishInPage(page, clientId, `${prefix}/to-page/echo`, 'echo');
    const received = await receivedInPage(page, clientId, 2);
    assert.deepEqual(received[1], {topic: `${prefix}/to-page/echo`, payload: 'echo', qos: 1});
    await endInPage(page, clientId);
    await page.close();
  });
}
