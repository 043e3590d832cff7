// One device: who it is, its latest values and attributes, a chart per field (history
// from the aggregate queries, then live points from the stream), a command sender with
// each command's status, and its alarms.

import {ApiError, get, post, segment} from '../api.js';
import {openStream} from '../stream.js';
import {AlarmTable} from '../alarm-table.js';
import {Chart, loadUPlot} from '../chart.js';
import {
  h, replace, errorText, formatJson, formatNumber, formatTime, labelChips, notice, presence,
  statusBadge, timeAgo, uid,
} from '../dom.js';

export const title = (context) => context.params[0];

const MINUTE = 60_000;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;
const RANGES = [
  {key: '15m', label: '15 min', span: 15 * MINUTE},
  {key: '1h', label: '1 h', span: HOUR},
  {key: '24h', label: '24 h', span: DAY},
  {key: '7d', label: '7 d', span: 7 * DAY},
  {key: 'custom', label: 'Custom'},
];
/** Window lengths for aggregated history, in ms. */
const STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400]
  .map((seconds) => seconds * 1000);
/** Points a chart should get: enough for detail, few enough to load at once. */
const TARGET_POINTS = 800;
/** Up to this range, raw points (a device sending every second gives 900). */
const RAW_UP_TO = 15 * MINUTE;
const TERMINAL = new Set(['succeeded', 'failed', 'expired']);
const POLL_MS = 2000;
/** Commands listed when the page opens. */
const RECENT_COMMANDS = 10;
/** While telemetry flows, the device itself (ingest error, attributes) is refetched this often. */
const DEVICE_REFRESH_MS = 10_000;

/** The aggregation window for a range: 0 for raw points, else about TARGET_POINTS windows. */
export function bucketFor(span) {
  if (span <= RAW_UP_TO) return 0;
  const wanted = span / TARGET_POINTS;
  return STEPS.find((step) => step >= wanted) || STEPS[STEPS.length - 1];
}

export function render(main, context) {
  const id = context.params[0];
  const path = `/devices/${segment(id)}`;
  let alive = true;
  let device = null;
  const latest = new Map();
  const charts = new Map();
  let chartWindow = null;
  let bucket = 0;
  let historyRequest = 0;
  /** Live points that arrive while history loads, applied after it. */
  let pendingPoints = [];
  let isLoadingHistory = false;
  const commands = new Map();
  let pollTimer = null;
  let deviceLoadedAt = 0;

  // --- Layout ---------------------------------------------------------------------
  const header = h('div', {class: 'device-head'}, h('h1', {}, id));
  const ingestError = h('div');
  const latestBody = h('tbody');
  const latestEmpty = h('p', {class: 'muted'}, 'No telemetry yet.');
  const latestTable = h('table', {class: 'compact'},
    h('caption', {class: 'visually-hidden'}, 'Latest values'),
    h('thead', {}, h('tr', {}, h('th', {scope: 'col'}, 'Field'), h('th', {scope: 'col', class: 'number'}, 'Value'),
      h('th', {scope: 'col'}, 'Measured'))),
    latestBody);
  const attributes = h('div');
  const chartGrid = h('div', {class: 'charts'});
  const chartStatus = h('p', {class: 'muted', role: 'status'});
  const picker = rangePicker();
  const commandTable = h('tbody');
  const commandList = h('table', {class: 'list compact', hidden: true},
    h('caption', {class: 'visually-hidden'}, 'Commands sent'),
    h('thead', {}, h('tr', {}, h('th', {scope: 'col'}, 'Command'), h('th', {scope: 'col'}, 'Status'),
      h('th', {scope: 'col'}, 'Sent'), h('th', {scope: 'col'}, 'Result'))),
    commandTable);
  const alarmTable = new AlarmTable({caption: 'Alarms of this device', showDevice: false, emptyText: 'No alarms for this device.'});
  const alarmProblem = h('div');

  main.append(
    h('p', {class: 'breadcrumb'}, h('a', {href: '#/devices'}, 'Devices'), ' / ', h('span', {class: 'mono'}, id)),
    header,
    ingestError,
    h('div', {class: 'columns'},
      h('section', {class: 'card', 'aria-labelledby': 'dev-latest'}, h('h2', {id: 'dev-latest'}, 'Latest values'),
        latestEmpty, latestTable),
      h('section', {class: 'card', 'aria-labelledby': 'dev-attributes'}, h('h2', {id: 'dev-attributes'}, 'Attributes'),
        attributes)),
    h('section', {class: 'card', 'aria-labelledby': 'dev-charts'},
      h('div', {class: 'card-head'}, h('h2', {id: 'dev-charts'}, 'Telemetry'), picker.element),
      chartStatus, chartGrid),
    h('div', {class: 'columns'},
      h('section', {class: 'card', 'aria-labelledby': 'dev-command'}, h('h2', {id: 'dev-command'}, 'Send a command'),
        commandForm(), commandList),
      h('section', {class: 'card', 'aria-labelledby': 'dev-alarms'}, h('h2', {id: 'dev-alarms'}, 'Alarms'),
        alarmProblem, alarmTable.element)),
  );

  // --- Device ---------------------------------------------------------------------
  async function loadDevice() {
    deviceLoadedAt = Date.now();
    try {
      device = await get(path);
      if (alive) showDevice();
    } catch (error) {
      if (!alive) return;
      if (error.status === 404) {
        replace(main, h('h1', {}, 'Device not found'),
          h('p', {}, 'There is no device ', h('code', {}, id), '. ', h('a', {href: '#/devices'}, 'Back to the devices'), '.'));
        alive = false;
        stop();
        return;
      }
      replace(ingestError, notice('error', `Could not load the device: ${errorText(error)}`));
    }
  }

  function showDevice() {
    replace(header,
      h('div', {class: 'title-row'},
        h('h1', {}, device.name || device.id),
        h('span', {class: 'device-presence'}, presence(device.online))),
      h('dl', {class: 'facts'},
        device.name ? [h('dt', {}, 'ID'), h('dd', {class: 'mono'}, device.id)] : null,
        h('dt', {}, 'Type'), h('dd', {}, device.type || '—'),
        h('dt', {}, 'Last seen'), h('dd', {class: 'last-seen'}, timeAgo(device.last_seen)),
        h('dt', {}, 'Registered'), h('dd', {}, formatTime(device.created_at)),
        h('dt', {}, 'Credentials'), h('dd', {}, device.has_credentials ? 'issued' : 'none'),
        h('dt', {}, 'Labels'), h('dd', {}, labelChips(device.labels))));
    document.title = `${device.name || device.id} · Fleetwire`;
    const failure = device.last_ingest_error;
    replace(ingestError, failure ? notice('warning',
      h('strong', {}, 'Last rejected message'), ` (${formatTime(failure.at)}`,
      failure.source ? `, ${failure.source}` : '', '): ', h('span', {class: 'mono'}, failure.message)) : null);
    const entries = Object.entries(device.attributes || {});
    replace(attributes, entries.length === 0
      ? h('p', {class: 'muted'}, 'No attributes reported.')
      : h('table', {class: 'compact'},
        h('caption', {class: 'visually-hidden'}, 'Attributes'),
        h('thead', {}, h('tr', {}, h('th', {scope: 'col'}, 'Attribute'), h('th', {scope: 'col'}, 'Value'))),
        h('tbody', {}, entries.map(([key, value]) => h('tr', {},
          h('th', {scope: 'row'}, key), h('td', {class: 'mono'}, formatJson(value)))))));
  }

  // --- Latest values ----------------------------------------------------------------
  async function loadLatest() {
    try {
      const values = await get(`${path}/telemetry/latest`);
      if (!alive) return [];
      for (const [field, sample] of Object.entries(values || {})) {
        const known = latest.get(field);
        if (!known || known.ts <= sample.ts) latest.set(field, sample);
      }
      showLatest();
    } catch (error) {
      if (alive && error.status !== 404) latestEmpty.textContent = `Could not load the latest values: ${errorText(error)}`;
    }
    return [...latest.keys()];
  }

  function showLatest() {
    const fields = [...latest.keys()].sort();
    latestEmpty.hidden = fields.length > 0;
    latestTable.hidden = fields.length === 0;
    replace(latestBody, fields.map((field) => {
      const sample = latest.get(field);
      return h('tr', {dataset: {field}},
        h('th', {scope: 'row'}, field),
        h('td', {class: 'number'}, formatNumber(sample.value)),
        h('td', {}, timeAgo(sample.ts)));
    }));
  }

  // --- Charts -------------------------------------------------------------------------
  function rangePicker() {
    const selected = context.query.get('range') || '15m';
    const name = uid('range');
    const fromInput = h('input', {type: 'datetime-local', id: uid('from'), step: 1});
    const toInput = h('input', {type: 'datetime-local', id: uid('to'), step: 1});
    const now = Date.now();
    fromInput.value = localInput(Number(context.query.get('from')) || now - HOUR);
    toInput.value = localInput(Number(context.query.get('to')) || now);
    const customError = h('span', {class: 'field-error', role: 'alert'});
    const custom = h('div', {class: 'custom-range', hidden: selected !== 'custom'},
      h('label', {for: fromInput.id}, 'From'), fromInput,
      h('label', {for: toInput.id}, 'To'), toInput,
      h('button', {type: 'submit', class: 'small'}, 'Show'), customError);
    const options = RANGES.map((range) => h('label', {class: 'segment'},
      h('input', {type: 'radio', name, value: range.key, checked: range.key === selected}),
      h('span', {}, range.label)));
    const form = h('form', {class: 'range-picker'},
      h('fieldset', {}, h('legend', {class: 'visually-hidden'}, 'Time range'),
        h('span', {class: 'legend', 'aria-hidden': 'true'}, 'Range'), h('div', {class: 'segments'}, options)),
      custom);
    const value = () => form.querySelector(`input[name="${name}"]:checked`).value;
    const current = () => {
      const key = value();
      if (key !== 'custom') return {key, span: RANGES.find((range) => range.key === key).span};
      const from = new Date(fromInput.value).getTime();
      const to = new Date(toInput.value).getTime();
      if (!Number.isFinite(from) || !Number.isFinite(to) || from >= to) return {key, error: 'From must be before To.'};
      return {key, from, to};
    };
    form.addEventListener('change', (event) => {
      if (event.target.name !== name) return;
      custom.hidden = value() !== 'custom';
      if (value() !== 'custom') loadHistory();
    });
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      loadHistory();
    });
    return {element: form, current, customError};
  }

  async function loadHistory() {
    const range = picker.current();
    picker.customError.textContent = range.error || '';
    if (range.error) return;
    context.replaceQuery(range.key === 'custom' ? {range: 'custom', from: range.from, to: range.to} : {range: range.key});
    const mine = ++historyRequest;
    const to = range.span ? Date.now() : range.to;
    const from = range.span ? to - range.span : range.from;
    chartWindow = range.span ? {span: range.span} : {from, to};
    bucket = bucketFor(to - from);
    const fields = [...latest.keys()].sort();
    for (const chart of charts.values()) chart.destroy();
    charts.clear();
    if (fields.length === 0) {
      chartStatus.textContent = 'No telemetry yet: a chart appears for each field the device sends.';
      isLoadingHistory = false;
      return;
    }
    isLoadingHistory = true;
    pendingPoints = [];
    chartStatus.textContent = 'Loading history…';
    chartGrid.setAttribute('aria-busy', 'true');
    try {
      const query = {fields: fields.join(','), from, to};
      if (bucket) Object.assign(query, {agg: 'avg', every: `${bucket / 1000}s`});
      const [uPlot, answer] = await Promise.all([loadUPlot(), get(`${path}/telemetry`, query)]);
      if (!alive || mine !== historyRequest) return;
      const series = new Map((answer.series || []).map((item) => [item.field, item.points]));
      for (const field of fields) addChart(uPlot, field, series.get(field) || []);
      chartStatus.textContent = describeRange(range, bucket);
      isLoadingHistory = false;
      if (range.span) for (const [field, ts, value] of pendingPoints) if (ts >= to) appendPoint(uPlot, field, ts, value);
      pendingPoints = [];
    } catch (error) {
      if (!alive || mine !== historyRequest) return;
      isLoadingHistory = false;
      chartStatus.textContent = `Could not load the history: ${errorText(error)}`;
    } finally {
      if (mine === historyRequest) chartGrid.removeAttribute('aria-busy');
    }
  }

  function addChart(uPlot, field, points) {
    const sorted = [...charts.keys(), field].sort();
    const chart = new Chart(uPlot, chartGrid, field, {points, window: chartWindow, bucket});
    // Keep the charts in field order.
    const next = sorted[sorted.indexOf(field) + 1];
    if (next && charts.has(next)) chartGrid.insertBefore(chart.figure, charts.get(next).figure);
    charts.set(field, chart);
    return chart;
  }

  function appendPoint(uPlot, field, ts, value) {
    if (!chartWindow || !chartWindow.span) return;
    let chart = charts.get(field);
    if (!chart) {
      chart = addChart(uPlot, field, []);
      chartStatus.textContent = describeRange(picker.current(), bucket);
    }
    chart.append(ts, value);
  }

  // --- Live events ----------------------------------------------------------------------
  function onTelemetry(event) {
    const ts = Number(event.ts);
    for (const [field, value] of Object.entries(event.fields || {})) {
      const number = typeof value === 'boolean' ? Number(value) : value;
      if (typeof number !== 'number') continue;
      const known = latest.get(field);
      if (!known || known.ts <= ts) latest.set(field, {ts, value: number});
      if (isLoadingHistory) pendingPoints.push([field, ts, number]);
      else if (chartWindow && chartWindow.span) {
        loadUPlot().then((uPlot) => alive && appendPoint(uPlot, field, ts, number));
      }
    }
    showLatest();
    // New data may come with a new ingest error or attributes: refresh the header now and then.
    if (Date.now() - deviceLoadedAt > DEVICE_REFRESH_MS) loadDevice();
  }

  function onPresence(event) {
    if (!device) return;
    device.online = event.online;
    device.last_seen = new Date(event.ts).toISOString();
    showDevice();
  }

  const stopStream = openStream({devices: [id], kinds: ['telemetry', 'presence', 'alarm', 'command']}, {
    onEvent(event) {
      if (!alive || event.device_id !== id) return;
      if (event.kind === 'telemetry') onTelemetry(event);
      else if (event.kind === 'presence') onPresence(event);
      else if (event.kind === 'alarm' && event.alarm) alarmTable.upsert(event.alarm, {addIfMissing: true});
      else if (event.kind === 'command' && event.command) showCommand(event.command);
    },
    onResync() {
      loadDevice();
      loadLatest().then(() => loadHistory());
      loadAlarms();
      loadCommands();
    },
  });

  // --- Commands -------------------------------------------------------------------------
  function commandForm() {
    const nameId = uid('command-name');
    const paramsId = uid('command-params');
    const timeoutId = uid('command-timeout');
    const name = h('input', {id: nameId, name: 'name', type: 'text', required: true, autocomplete: 'off', spellcheck: 'false', placeholder: 'reboot'});
    const params = h('textarea', {id: paramsId, name: 'params', rows: 3, spellcheck: 'false', class: 'mono', 'aria-describedby': `${paramsId}-error`}, '{}');
    const timeout = h('input', {id: timeoutId, name: 'timeout', type: 'number', min: 1, max: 86400, step: 1, value: '30', required: true});
    const nameError = h('p', {id: `${nameId}-error`, class: 'field-error'});
    const paramsError = h('p', {id: `${paramsId}-error`, class: 'field-error'});
    const formError = h('div', {role: 'alert'});
    const button = h('button', {type: 'submit'}, 'Send command');
    name.setAttribute('aria-describedby', nameError.id);
    const form = h('form', {class: 'command-form', novalidate: true},
      h('div', {class: 'field-row'},
        h('div', {class: 'field grow'}, h('label', {for: nameId}, 'Name'), name, nameError),
        h('div', {class: 'field narrow'}, h('label', {for: timeoutId}, 'Timeout (s)'), timeout)),
      h('div', {class: 'field'}, h('label', {for: paramsId}, 'Parameters (JSON object)'), params, paramsError),
      formError, button);
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      nameError.textContent = '';
      paramsError.textContent = '';
      name.removeAttribute('aria-invalid');
      params.removeAttribute('aria-invalid');
      replace(formError);
      let parsed;
      try {
        parsed = params.value.trim() ? JSON.parse(params.value) : {};
        if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) throw new Error('expected a JSON object such as {"delay_s": 5}');
      } catch (error) {
        paramsError.textContent = `Not a JSON object: ${error.message}`;
        params.setAttribute('aria-invalid', 'true');
        params.focus();
        return;
      }
      if (!name.value.trim()) {
        nameError.textContent = 'Give the command a name.';
        name.setAttribute('aria-invalid', 'true');
        name.focus();
        return;
      }
      const seconds = Number(timeout.value);
      button.disabled = true;
      try {
        const command = await post(`${path}/commands`, {
          name: name.value.trim(), params: parsed, timeout_s: Number.isFinite(seconds) && seconds > 0 ? Math.round(seconds) : 30,
        });
        if (!alive) return;
        showCommand({name: name.value.trim(), params: parsed, created_at: new Date().toISOString(), ...command});
      } catch (error) {
        replace(formError, notice('error', `Could not send the command: ${errorText(error)}`));
      } finally {
        button.disabled = false;
      }
    });
    return form;
  }

  function showCommand(command) {
    const known = commands.get(command.id);
    // Stream events and polls may arrive out of order: never go back from a final status.
    if (known && TERMINAL.has(known.status) && !TERMINAL.has(command.status)) return;
    commands.set(command.id, {...known, ...command});
    const list = [...commands.values()].sort((a, b) => String(b.created_at).localeCompare(String(a.created_at)));
    commandList.hidden = list.length === 0;
    replace(commandTable, list.slice(0, RECENT_COMMANDS).map((item) => h('tr', {dataset: {command: item.id, status: item.status}},
      h('td', {}, h('span', {class: 'mono'}, item.name), h('span', {class: 'hint block mono'}, formatJson(item.params))),
      h('td', {}, statusBadge(item.status)),
      h('td', {}, timeAgo(item.created_at)),
      h('td', {class: 'mono'}, item.result === undefined || item.result === null ? '—' : formatJson(item.result)))));
    schedulePoll();
  }

  /** The stream reports status changes; polling covers a stream that is down or slow. */
  function schedulePoll() {
    if (pollTimer || !alive) return;
    if (![...commands.values()].some((command) => !TERMINAL.has(command.status))) return;
    pollTimer = setTimeout(pollCommands, POLL_MS);
  }

  async function pollCommands() {
    pollTimer = null;
    const open = [...commands.values()].filter((command) => !TERMINAL.has(command.status));
    await Promise.all(open.map(async (command) => {
      try {
        const fresh = await get(`${path}/commands/${segment(command.id)}`);
        if (alive && fresh) showCommand(fresh);
      } catch (error) {
        if (!(error instanceof ApiError)) throw error;
      }
    }));
    schedulePoll();
  }

  /** The device's latest commands, whoever sent them (a rule, another user, this page). */
  async function loadCommands() {
    try {
      const page = await get(`${path}/commands`, {limit: RECENT_COMMANDS});
      if (alive) for (const command of page.items || []) showCommand(command);
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
    }
  }

  // --- Alarms -----------------------------------------------------------------------------
  async function loadAlarms() {
    try {
      const page = await get('/alarms', {device: id, limit: 50});
      if (!alive) return;
      replace(alarmProblem);
      alarmTable.set(page.items);
    } catch (error) {
      if (alive) replace(alarmProblem, notice('warning', `Could not load the alarms: ${errorText(error)}`));
    }
  }

  // --- Start and stop ---------------------------------------------------------------------
  const slide = setInterval(() => {
    if (chartWindow && chartWindow.span) for (const chart of charts.values()) chart.schedule();
  }, 1000);

  function stop() {
    clearInterval(slide);
    clearTimeout(pollTimer);
    stopStream();
    for (const chart of charts.values()) chart.destroy();
    charts.clear();
  }

  loadDevice();
  loadLatest().then(() => alive && loadHistory());
  loadAlarms();
  loadCommands();

  return () => {
    alive = false;
    stop();
  };
}

function describeRange(range, bucket) {
  const how = bucket ? `averages over ${bucket >= MINUTE ? `${bucket / MINUTE} min` : `${bucket / 1000} s`}` : 'raw points';
  if (range.span) return `Last ${RANGES.find((item) => item.key === range.key).label}, ${how}, live.`;
  return `${formatTime(range.from)} to ${formatTime(range.to)}, ${how}.`;
}

/** A time as the value of a datetime-local input (local time, seconds). */
function localInput(ms) {
  const date = new Date(ms);
  const pad = (number) => String(number).padStart(2, '0');
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}T${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`;
}
