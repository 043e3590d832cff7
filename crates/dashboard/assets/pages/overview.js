// Fleet overview: devices online and offline, open alarms by severity, ingest rate,
// refreshed every few seconds, and alarm events as they happen.

import {get, segment} from '../api.js';
import {openStream} from '../stream.js';
import {
  h, replace, errorText, formatClock, formatNumber, formatRate, notice,
  severityBadge, statusBadge, timeAgo, formatValues, SEVERITIES,
} from '../dom.js';

export const title = () => 'Overview';

const REFRESH_MS = 5000;
const RECENT_ALARMS = 12;

export function render(main) {
  let alive = true;
  let loading = false;
  const devicesCard = h('section', {class: 'card stat', 'aria-labelledby': 'ov-devices'},
    h('h2', {id: 'ov-devices'}, 'Devices'), h('p', {class: 'muted'}, 'Loading…'));
  const alarmsCard = h('section', {class: 'card stat', 'aria-labelledby': 'ov-alarms'},
    h('h2', {id: 'ov-alarms'}, 'Open alarms'), h('p', {class: 'muted'}, 'Loading…'));
  const ingestCard = h('section', {class: 'card stat', 'aria-labelledby': 'ov-ingest'},
    h('h2', {id: 'ov-ingest'}, 'Ingest'), h('p', {class: 'muted'}, 'Loading…'));
  const status = h('p', {class: 'updated muted'});
  const recentList = h('ol', {class: 'events', 'aria-live': 'polite', 'aria-relevant': 'additions'});
  const recentEmpty = h('p', {class: 'muted'}, 'No open alarms.');

  main.append(
    h('div', {class: 'page-head'}, h('h1', {}, 'Fleet overview'), status),
    h('div', {class: 'stats'}, devicesCard, alarmsCard, ingestCard),
    h('section', {class: 'card', 'aria-labelledby': 'ov-recent'},
      h('div', {class: 'card-head'}, h('h2', {id: 'ov-recent'}, 'Recent alarm activity'),
        h('a', {href: '#/alarms'}, 'All alarms')),
      recentEmpty, recentList),
  );

  function showDevices(devices) {
    const offline = Math.max(0, devices.total - devices.online);
    replace(devicesCard,
      h('h2', {id: 'ov-devices'}, 'Devices'),
      h('p', {class: 'big'}, h('span', {class: 'value', 'data-testid': 'online-count'}, formatNumber(devices.online)),
        h('span', {class: 'unit'}, ' online')),
      h('dl', {class: 'pairs'},
        h('dt', {}, 'Offline'), h('dd', {'data-testid': 'offline-count'}, formatNumber(offline)),
        h('dt', {}, 'Registered'), h('dd', {}, formatNumber(devices.total))),
      h('a', {href: '#/devices'}, 'View devices'));
  }

  function showAlarms(alarms, note) {
    const rows = SEVERITIES.map((severity) => h('tr', {},
      h('th', {scope: 'row'}, severityBadge(severity)),
      h('td', {'data-testid': `active-${severity}`}, formatNumber(alarms.active?.[severity] ?? 0)),
      h('td', {}, alarms.acknowledged ? formatNumber(alarms.acknowledged[severity] ?? 0) : '—')));
    replace(alarmsCard,
      h('h2', {id: 'ov-alarms'}, 'Open alarms'),
      h('table', {class: 'compact'},
        h('thead', {}, h('tr', {},
          h('th', {scope: 'col'}, 'Severity'), h('th', {scope: 'col'}, 'Active'), h('th', {scope: 'col'}, 'Acknowledged'))),
        h('tbody', {}, rows)),
      note ? h('p', {class: 'hint'}, note) : null);
  }

  function showIngest(ingest) {
    replace(ingestCard,
      h('h2', {id: 'ov-ingest'}, 'Ingest'),
      h('p', {class: 'big'}, h('span', {class: 'value', 'data-testid': 'messages-per-second'}, formatRate(ingest.messages_per_second)),
        h('span', {class: 'unit'}, ' messages/s')),
      h('dl', {class: 'pairs'},
        h('dt', {}, 'Points/s'), h('dd', {}, formatRate(ingest.points_per_second))));
  }

  function unavailable(card, id, heading, text) {
    replace(card, h('h2', {id}, heading), h('p', {class: 'muted'}, text));
  }

  /** Without `/overview` (older servers): alarm counts from one page of each status. */
  async function fallback() {
    unavailable(devicesCard, 'ov-devices', 'Devices', 'This server does not report fleet totals (no /api/v1/overview).');
    unavailable(ingestCard, 'ov-ingest', 'Ingest', 'Not reported by this server.');
    const counts = {active: {}, acknowledged: {}};
    let isPartial = false;
    try {
      for (const state of ['active', 'acknowledged']) {
        const page = await get('/alarms', {status: state, limit: 1000});
        for (const alarm of page.items) counts[state][alarm.severity] = (counts[state][alarm.severity] || 0) + 1;
        if (page.next_cursor) isPartial = true;
      }
    } catch (error) {
      if (alive) unavailable(alarmsCard, 'ov-alarms', 'Open alarms', `Not available: ${errorText(error)}`);
      return;
    }
    if (alive) showAlarms(counts, isPartial ? 'At least these many: counted from the first 1,000.' : null);
  }

  let hasOverview = true;
  async function refresh() {
    if (loading || !alive) return;
    loading = true;
    try {
      if (hasOverview) {
        try {
          const overview = await get('/overview');
          if (!alive) return;
          showDevices(overview.devices);
          showAlarms(overview.alarms);
          showIngest(overview.ingest);
        } catch (error) {
          if (error.status !== 404) throw error;
          hasOverview = false;
        }
      }
      if (!hasOverview) await fallback();
      status.textContent = `Updated ${formatClock(Date.now())}`;
      status.classList.remove('stale');
    } catch (error) {
      if (!alive) return;
      status.textContent = `Could not refresh: ${errorText(error)}`;
      status.classList.add('stale');
    } finally {
      loading = false;
    }
  }

  const recent = new Map();
  function showRecent() {
    const alarms = [...recent.values()]
      .sort((a, b) => String(b.updated_at).localeCompare(String(a.updated_at)))
      .slice(0, RECENT_ALARMS);
    recentEmpty.hidden = alarms.length > 0;
    replace(recentList, alarms.map((alarm) => h('li', {class: 'event', dataset: {alarm: alarm.id, status: alarm.status}},
      severityBadge(alarm.severity),
      h('span', {class: 'what'}, h('strong', {}, alarm.rule_name || alarm.rule_id), ' on ',
        h('a', {href: `#/devices/${segment(alarm.device_id)}`}, alarm.device_id)),
      h('span', {class: 'values'}, formatValues(alarm.values)),
      statusBadge(alarm.status),
      timeAgo(alarm.updated_at))));
  }

  async function loadRecent() {
    try {
      const pages = await Promise.all(['active', 'acknowledged'].map((status) => get('/alarms', {status, limit: RECENT_ALARMS})));
      if (!alive) return;
      recent.clear();
      for (const alarm of pages.flatMap((page) => page.items)) recent.set(alarm.id, alarm);
      showRecent();
    } catch (error) {
      if (!alive) return;
      replace(recentList);
      recentEmpty.hidden = true;
      recentList.before(notice('warning', `Alarms are unavailable: ${errorText(error)}`));
    }
  }

  refresh();
  loadRecent();
  const timer = setInterval(refresh, REFRESH_MS);
  const closeStream = openStream({kinds: ['alarm']}, {
    onEvent(event) {
      if (event.kind !== 'alarm' || !event.alarm) return;
      recent.set(event.alarm.id, event.alarm);
      showRecent();
      refresh();
    },
    onResync() {
      loadRecent();
      refresh();
    },
  });

  return () => {
    alive = false;
    clearInterval(timer);
    closeStream();
  };
}

