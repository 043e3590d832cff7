// What the browser tests stand on: the real fleetwire binary on free loopback ports, the
// dashboard in front of it, Debian's Chromium, and small helpers to act as devices.

import {spawn, execFile} from 'node:child_process';
import {mkdtemp, readFile, rm, mkdir} from 'node:fs/promises';
import {existsSync} from 'node:fs';
import {tmpdir} from 'node:os';
import path from 'node:path';
import {createInterface} from 'node:readline';
import {fileURLToPath} from 'node:url';
import {chromium} from 'playwright-core';

export const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const TARGET = process.env.CARGO_TARGET_DIR ? path.resolve(REPO, process.env.CARGO_TARGET_DIR) : path.join(REPO, 'target');
export const BINARY = process.env.FLEETWIRE_BIN || path.join(TARGET, 'debug', 'fleetwire');
export const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';
export const SCREENSHOTS = process.env.SCREENSHOT_DIR || path.join(TARGET, 'browser-screenshots');
const START_TIMEOUT_MS = 30_000;

/**
 * Starts `fleetwire serve`, which serves the API and the dashboard on one port. With
 * `{tls: true}`, `fleetwire cert init` first makes a development PKI in the data dir, and the
 * server also listens for MQTT over TLS (`mqttsPort`) and HTTPS (`https`, `httpsPort`, the
 * CA in `caFile`), on free loopback ports.
 */
export async function startServer({tls = false} = {}) {
  if (!existsSync(BINARY)) throw new Error(`no fleetwire binary at ${BINARY}: run cargo build -p fleetwire or set FLEETWIRE_BIN`);
  const tmp = await mkdtemp(path.join(tmpdir(), 'fleetwire-browser-'));
  const dataDir = path.join(tmp, 'data');
  // Fleetwire reads every FLEETWIRE_* variable as configuration and refuses unknown keys.
  const env = Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith('FLEETWIRE_')));
  env.RUST_LOG = 'info';
  const wanted = ['mqtt', 'http'];
  if (tls) {
    await run(BINARY, ['cert', 'init', '--data-dir', dataDir], {env});
    Object.assign(env, {
      FLEETWIRE_TLS__CERT_FILE: path.join(dataDir, 'tls', 'server.pem'),
      FLEETWIRE_TLS__KEY_FILE: path.join(dataDir, 'tls', 'server.key'),
      FLEETWIRE_TLS__CLIENT_CA_FILE: path.join(dataDir, 'tls', 'ca.pem'),
      FLEETWIRE_MQTT__TLS_ADDR: '127.0.0.1:0',
      FLEETWIRE_HTTP__TLS_ADDR: '127.0.0.1:0',
    });
    wanted.push('mqtts', 'https');
  }
  const child = spawn(BINARY, [
    '--log-format', 'json', 'serve', '--data-dir', dataDir,
    '--mqtt-addr', '127.0.0.1:0', '--http-addr', '127.0.0.1:0', '--allow-anonymous',
  ], {env, stdio: ['ignore', 'pipe', 'pipe']});
  const log = [];
  const addresses = await new Promise((resolve, reject) => {
    const found = {};
    const timer = setTimeout(() => reject(new Error(`fleetwire did not report its listeners in time:\n${log.join('\n')}`)), START_TIMEOUT_MS);
    child.on('exit', (code) => reject(new Error(`fleetwire exited with ${code}:\n${log.join('\n')}`)));
    for (const stream of [child.stdout, child.stderr]) {
      createInterface({input: stream}).on('line', (line) => {
        log.push(line);
        if (log.length > 2000) log.shift();
        let record;
        try {
          record = JSON.parse(line);
        } catch {
          return;
        }
        const fields = record.fields || {};
        if (fields.message === 'listening' && wanted.includes(fields.protocol)) {
          found[fields.protocol] = fields.addr;
          if (wanted.every((protocol) => found[protocol])) {
            clearTimeout(timer);
            resolve(found);
          }
        }
      });
    }
  });
  child.removeAllListeners('exit');
  const token = (await readFile(path.join(dataDir, 'admin.token'), 'utf8')).trim();
  const api = `http://${addresses.http}`;
  const [mqttHost, mqttPort] = splitAddr(addresses.mqtt);
  const server = {child, tmp, dataDir, token, api, base: api, mqttHost, mqttPort, log, servesDashboard: true};
  if (tls) {
    server.caFile = path.join(dataDir, 'tls', 'ca.pem');
    server.serverCertFile = path.join(dataDir, 'tls', 'server.pem');
    server.mqttsPort = splitAddr(addresses.mqtts)[1];
    server.httpsPort = splitAddr(addresses.https)[1];
    // The dev server certificate names localhost and 127.0.0.1.
    server.https = `https://localhost:${server.httpsPort}`;
  }

  const index = await fetch(`${api}/`).catch(() => null);
  if (!index || !index.ok || !(index.headers.get('content-type') || '').startsWith('text/html')) {
    child.kill('SIGKILL');
    throw new Error(`the binary does not serve the dashboard at ${api}/ (status ${index && index.status})`);
  }
  server.call = (method, route, body) => apiCall(server, method, route, body);
  server.stop = async () => {
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGTERM');
    await exited;
    await rm(tmp, {recursive: true, force: true});
  };
  return server;
}

function splitAddr(addr) {
  const index = addr.lastIndexOf(':');
  return [addr.slice(0, index).replace(/^\[|\]$/g, ''), Number(addr.slice(index + 1))];
}

/** One API request with the admin token; resolves to {status, body}. */
export async function apiCall(server, method, route, body) {
  const response = await fetch(`${server.api}/api/v1${route}`, {
    method,
    headers: {
      Authorization: `Bearer ${server.token}`,
      ...(body === undefined ? {} : {'Content-Type': 'application/json'}),
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  let parsed = text;
  try {
    parsed = text ? JSON.parse(text) : null;
  } catch {
    // Not JSON: keep the text.
  }
  return {status: response.status, body: parsed};
}

/** Like apiCall, but throws unless the status is 2xx. */
export async function must(server, method, route, body) {
  const result = await apiCall(server, method, route, body);
  if (result.status < 200 || result.status > 299) {
    throw new Error(`${method} ${route} answered ${result.status}: ${JSON.stringify(result.body)}`);
  }
  return result.body;
}

/** Runs a command; resolves to its stdout. */
export function run(command, args, {timeout = 20_000, env = process.env} = {}) {
  return new Promise((resolve, reject) => {
    execFile(command, args, {timeout, env}, (error, stdout, stderr) => {
      if (error) reject(new Error(`${command} ${args.join(' ')}: ${error.message}\n${stderr}`));
      else resolve(stdout);
    });
  });
}

/** Publishes as an MQTT client (mosquitto_pub; the server allows anonymous clients). */
export function mqttPublish(server, topic, payload, extra = []) {
  return run('mosquitto_pub', ['-h', server.mqttHost, '-p', String(server.mqttPort), '-q', '1', '-t', topic, '-m', payload, ...extra]);
}

/**
 * Subscribes as an MQTT client until `count` messages came; resolves to [[topic, payload], ...].
 * Resolves `ready` once the subscription is in place.
 */
export function mqttSubscribe(server, topic, {count = 1, timeoutSeconds = 20, clientId} = {}) {
  const args = ['-h', server.mqttHost, '-p', String(server.mqttPort), '-q', '1', '-t', topic, '-v', '-C', String(count), '-W', String(timeoutSeconds)];
  if (clientId) args.push('-i', clientId);
  const child = spawn('mosquitto_sub', args, {stdio: ['ignore', 'pipe', 'pipe']});
  const messages = [];
  const done = new Promise((resolve, reject) => {
    createInterface({input: child.stdout}).on('line', (line) => {
      const space = line.indexOf(' ');
      messages.push([line.slice(0, space), line.slice(space + 1)]);
    });
    child.on('exit', (code) => (messages.length >= count ? resolve(messages) : reject(new Error(`mosquitto_sub ${topic} exited with ${code} after ${messages.length} messages`))));
  });
  return {done, child};
}

/**
 * Like mqttSubscribe, but resolves (to {done, child}) only once mosquitto_sub has its SUBACK
 * (its -d debug lines say so), so nothing published afterwards can be missed.
 */
export function mqttSubscribed(server, topic, {count = 1, timeoutSeconds = 20} = {}) {
  const args = ['-d', '-h', server.mqttHost, '-p', String(server.mqttPort), '-q', '1', '-t', topic, '-v', '-C', String(count), '-W', String(timeoutSeconds)];
  // stdbuf: line-buffered output, or the SUBACK line only shows when mosquitto_sub exits.
  const child = spawn('stdbuf', ['-oL', 'mosquitto_sub', ...args], {stdio: ['ignore', 'pipe', 'pipe']});
  const messages = [];
  const lines = [];
  return new Promise((subscribed, failed) => {
    const done = new Promise((resolve, reject) => {
      createInterface({input: child.stdout}).on('line', (line) => {
        lines.push(line);
        if (/^Client \S+ received SUBACK/.test(line)) subscribed({done, child});
        if (/^Client \S+ (sending|received) /.test(line) || /^Subscribed \(mid/.test(line)) return;
        const space = line.indexOf(' ');
        messages.push([line.slice(0, space), line.slice(space + 1)]);
      });
      child.on('exit', (code) => {
        if (messages.length >= count) resolve(messages);
        else {
          const error = new Error(`mosquitto_sub ${topic} exited with ${code} after ${messages.length} messages:\n${lines.join('\n')}`);
          failed(error);
          reject(error);
        }
      });
    });
    done.catch(() => {});
  });
}

/** Launches Debian's Chromium in a fresh profile, with a laptop-sized window; `args` adds flags. */
export async function launchBrowser({args = []} = {}) {
  const profile = await mkdtemp(path.join(tmpdir(), 'fleetwire-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: false,
    args: [
      '--headless=new', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      ...args,
    ],
    viewport: {width: 1366, height: 768},
  });
  return {
    context,
    async close() {
      await context.close();
      await rm(profile, {recursive: true, force: true});
    },
  };
}

/** Saves a full-page screenshot as `SCREENSHOTS/name.png`. */
export async function screenshot(page, name, {fullPage = true} = {}) {
  await mkdir(SCREENSHOTS, {recursive: true});
  const file = path.join(SCREENSHOTS, `${name}.png`);
  await page.screenshot({path: file, fullPage});
  return file;
}

/** Form controls on the page without an accessible name (label, aria-label or aria-labelledby). */
export function unlabelledControls(page) {
  return page.evaluate(() => [...document.querySelectorAll('input, select, textarea')]
    .filter((element) => element.type !== 'hidden' && element.offsetParent !== null)
    .filter((element) => !(element.labels && element.labels.length) && !element.getAttribute('aria-label') && !element.getAttribute('aria-labelledby'))
    .map((element) => element.outerHTML));
}
