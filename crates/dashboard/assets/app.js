// The dashboard's entry point: hash routing (`#/devices/ID`, so the server serves one
// page), the login gate, the navigation and the live-stream indicator.

import {getToken, clearToken} from './api.js';
import {onStreamState} from './stream.js';
import {h, refreshAgo} from './dom.js';
import * as login from './pages/login.js';
import * as overview from './pages/overview.js';
import * as devices from './pages/devices.js';
import * as device from './pages/device.js';
import * as alarms from './pages/alarms.js';
import * as rules from './pages/rules.js';
import * as ruleForm from './pages/rule-form.js';

const ROUTES = [
  {pattern: /^\/$/, page: overview, section: 'overview'},
  {pattern: /^\/devices$/, page: devices, section: 'devices'},
  {pattern: /^\/devices\/([^/]+)$/, page: device, section: 'devices'},
  {pattern: /^\/alarms$/, page: alarms, section: 'alarms'},
  {pattern: /^\/rules$/, page: rules, section: 'rules'},
  {pattern: /^\/rules\/([^/]+)$/, page: ruleForm, section: 'rules'},
  {pattern: /^\/login$/, page: login, section: null},
];

const main = document.getElementById('main');
const nav = document.getElementById('nav');
const session = document.getElementById('session');
const streamState = document.getElementById('stream-state');
let cleanup = null;
let isFirstRoute = true;
/** Why the login page is shown (set when the server refused the token). */
let loginReason = null;

/** The route of the current hash: path, decoded path parameters and query. */
export function currentRoute() {
  const hash = location.hash.replace(/^#/, '') || '/';
  const [path, search = ''] = hash.split('?', 2);
  return {path: path || '/', query: new URLSearchParams(search)};
}

/** Goes to `#path?query`, rendering the page. */
export function navigate(path, query) {
  const search = query ? new URLSearchParams(query).toString() : '';
  location.hash = `#${path}${search ? `?${search}` : ''}`;
}

/** Updates the query of the current hash without rendering again (filters as you type). */
export function replaceQuery(query) {
  const {path} = currentRoute();
  const entries = Object.entries(query).filter(([, value]) => value !== undefined && value !== null && value !== '');
  const search = new URLSearchParams(entries).toString();
  history.replaceState(null, '', `#${path}${search ? `?${search}` : ''}`);
}

function render() {
  if (cleanup) {
    cleanup();
    cleanup = null;
  }
  const {path, query} = currentRoute();
  const hasToken = Boolean(getToken());
  let route = ROUTES.find((candidate) => candidate.pattern.test(path));
  let params = [];
  if (!hasToken && (!route || route.page !== login)) {
    route = ROUTES.find((candidate) => candidate.page === login);
    const next = location.hash && location.hash !== '#/login' ? location.hash : '';
    query.set('next', next);
  } else if (hasToken && route && route.page === login) {
    route = ROUTES[0];
    history.replaceState(null, '', '#/');
  } else if (route) {
    params = route.pattern.exec(path).slice(1).map(decodeURIComponent);
  }
  nav.hidden = !hasToken;
  session.hidden = !hasToken;
  for (const link of nav.querySelectorAll('a')) {
    if (route && link.dataset.section === route.section) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  main.replaceChildren();
  if (!route) {
    document.title = 'Not found · Fleetwire';
    main.append(h('h1', {}, 'Page not found'),
      h('p', {}, 'There is no page at ', h('code', {}, path), '. ', h('a', {href: '#/'}, 'Go to the overview'), '.'));
  } else {
    const context = {params, query, navigate, replaceQuery, refresh: render, reason: loginReason};
    loginReason = null;
    const result = route.page.render(main, context);
    cleanup = typeof result === 'function' ? result : null;
    document.title = `${route.page.title ? route.page.title(context) : 'Fleetwire'} · Fleetwire`;
  }
  // Move focus to the new page for keyboard and screen-reader users, except on the first
  // load, where the browser's own start is right.
  if (!isFirstRoute) {
    const heading = main.querySelector('h1');
    if (heading) {
      heading.setAttribute('tabindex', '-1');
      heading.focus({preventScroll: false});
    } else {
      main.focus();
    }
  }
  isFirstRoute = false;
}

window.addEventListener('hashchange', render);

window.addEventListener('fleetwire:unauthorized', (event) => {
  if (!getToken()) return;
  clearToken();
  loginReason = `The server no longer accepts your token: ${event.detail}`;
  const {path} = currentRoute();
  if (path !== '/login') navigate('/login', {next: location.hash});
  else render();
});

// The skip link moves focus without touching the hash, which holds the route.
document.querySelector('.skip-link').addEventListener('click', (event) => {
  event.preventDefault();
  main.focus();
});

document.getElementById('logout').addEventListener('click', () => {
  clearToken();
  navigate('/login');
});

onStreamState((state) => {
  streamState.dataset.state = state;
  streamState.textContent = state === 'live' ? 'Live' : state === 'connecting' ? 'Reconnecting…' : '';
  streamState.title = state === 'live' ? 'Receiving live updates' : state === 'connecting' ? 'Live updates interrupted; reconnecting' : '';
});

// Relative times ("3 min ago") stay true while a page is open.
setInterval(() => refreshAgo(main), 5000);

render();
