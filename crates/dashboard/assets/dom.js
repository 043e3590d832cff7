// Small helpers to build the DOM and format values. Text always goes in as text nodes,
// never as HTML: device names, labels and alarm values come from devices.

/**
 * Creates an element: h('a', {href: '#/', class: 'link', onclick: fn}, 'text', child).
 * Props: `class`, `text`, `on<event>` listeners, `dataset` (object), booleans (set when
 * true, left out when false), anything else as an attribute. Children: strings, nodes,
 * arrays of them; null, undefined and false are skipped.
 */
export function h(tag, props, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(props || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name === 'class') element.className = value;
    else if (name === 'text') element.textContent = value;
    else if (name === 'dataset') Object.assign(element.dataset, value);
    else if (name.startsWith('on') && typeof value === 'function') {
      element.addEventListener(name.slice(2), value);
    } else if (name === 'value' && 'value' in element) element.value = value;
    else if (value === true) element.setAttribute(name, '');
    else element.setAttribute(name, String(value));
  }
  append(element, children);
  return element;
}

function append(element, children) {
  for (const child of children) {
    if (child === undefined || child === null || child === false) continue;
    if (Array.isArray(child)) append(element, child);
    else element.append(child instanceof Node ? child : String(child));
  }
}

/** Replaces every child of `element`. */
export function replace(element, ...children) {
  element.replaceChildren();
  append(element, children);
}

let unique = 0;
/** A fresh id for label/aria wiring. */
export function uid(prefix = 'id') {
  unique += 1;
  return `${prefix}-${unique}`;
}

/** `fn` called at most once per `ms`, with the last arguments. */
export function debounce(fn, ms) {
  let timer;
  const debounced = (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
  debounced.cancel = () => clearTimeout(timer);
  return debounced;
}

const timeFormat = new Intl.DateTimeFormat(undefined, {
  year: 'numeric', month: 'short', day: 'numeric',
  hour: '2-digit', minute: '2-digit', second: '2-digit',
});
const clockFormat = new Intl.DateTimeFormat(undefined, {
  hour: '2-digit', minute: '2-digit', second: '2-digit',
});
const numberFormat = new Intl.NumberFormat(undefined, {maximumFractionDigits: 3});
const rateFormat = new Intl.NumberFormat(undefined, {maximumFractionDigits: 1});

function toDate(time) {
  if (time === null || time === undefined || time === '') return null;
  const date = new Date(time);
  return Number.isNaN(date.getTime()) ? null : date;
}

/** Date and time in the user's locale, or an em dash. */
export function formatTime(time) {
  const date = toDate(time);
  return date ? timeFormat.format(date) : '—';
}

/** Time of day in the user's locale. */
export function formatClock(time) {
  const date = toDate(time);
  return date ? clockFormat.format(date) : '—';
}

/** "12 s ago", "3 min ago", "2 h ago", "4 d ago". */
export function formatAgo(time, now = Date.now()) {
  const date = toDate(time);
  if (!date) return 'never';
  const seconds = Math.max(0, Math.round((now - date.getTime()) / 1000));
  if (seconds < 5) return 'just now';
  if (seconds < 60) return `${seconds} s ago`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ago`;
  return `${Math.floor(seconds / 86400)} d ago`;
}

/** A <time> element showing "3 min ago" with the full date as its tooltip. */
export function timeAgo(time) {
  const date = toDate(time);
  if (!date) return h('span', {class: 'muted'}, 'never');
  return h('time', {datetime: date.toISOString(), title: formatTime(date), class: 'ago'}, formatAgo(date));
}

/** Refreshes the text of every `time.ago` under `root` (called every few seconds). */
export function refreshAgo(root) {
  const now = Date.now();
  for (const element of root.querySelectorAll('time.ago')) {
    element.textContent = formatAgo(element.getAttribute('datetime'), now);
  }
}

export function formatNumber(value) {
  return typeof value === 'number' && Number.isFinite(value) ? numberFormat.format(value) : '—';
}

export function formatRate(value) {
  return typeof value === 'number' && Number.isFinite(value) ? rateFormat.format(value) : '—';
}

/** A value of any JSON type, compact, for tables. */
export function formatJson(value) {
  if (value === null || value === undefined) return '—';
  if (typeof value === 'string') return value;
  return JSON.stringify(value);
}

/** Online/offline indicator: a coloured dot and the word, so colour is not the only cue. */
export function presence(online) {
  return h('span', {class: `presence ${online ? 'online' : 'offline'}`},
    h('span', {class: 'dot', 'aria-hidden': 'true'}), online ? 'Online' : 'Offline');
}

export const SEVERITIES = ['critical', 'high', 'medium', 'low'];

export function severityBadge(severity) {
  return h('span', {class: `badge severity-${severity}`}, severity);
}

export function statusBadge(status) {
  return h('span', {class: `badge status-${status}`}, status);
}

/** Labels as small "key=value" chips. */
export function labelChips(labels) {
  const entries = Object.entries(labels || {});
  if (entries.length === 0) return h('span', {class: 'muted'}, '—');
  return h('ul', {class: 'chips'},
    entries.map(([key, value]) => h('li', {class: 'chip'}, `${key}=${value}`)));
}

/** The message to show for a failed request (ApiError or anything thrown). */
export function errorText(error) {
  if (error && error.detail) return error.detail;
  return error && error.message ? error.message : String(error);
}

/** A message box; `kind` is 'error', 'warning' or 'info'. */
export function notice(kind, ...children) {
  return h('div', {class: `notice ${kind}`, role: kind === 'error' ? 'alert' : null}, ...children);
}

/** `temperature 31.2, humidity 40` from an alarm's values. */
export function formatValues(values) {
  const entries = Object.entries(values || {});
  if (entries.length === 0) return '';
  return entries.map(([field, value]) => `${field} ${typeof value === 'number' ? formatNumber(value) : formatJson(value)}`).join(', ');
}
