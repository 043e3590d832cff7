// Alarms: filter by status and severity, page through, acknowledge and clear; rows follow
// the live stream.

import {get} from '../api.js';
import {openStream} from '../stream.js';
import {Pager} from '../pager.js';
import {AlarmTable} from '../alarm-table.js';
import {h, replace, errorText, notice, uid, SEVERITIES} from '../dom.js';

export const title = () => 'Alarms';

const PAGE_SIZE = 50;
const STATUSES = ['active', 'acknowledged', 'cleared'];

export function render(main, context) {
  let alive = true;
  let request = 0;
  const select = (name, label, options, selected) => {
    const id = uid(name);
    const element = h('select', {id, name},
      options.map(([value, text]) => h('option', {value, selected: value === selected}, text)));
    return {element, field: h('div', {class: 'field'}, h('label', {for: id}, label), element)};
  };
  const status = select('status', 'Status',
    [['', 'Any'], ...STATUSES.map((value) => [value, capitalize(value)])],
    context.query.has('status') ? context.query.get('status') : 'active');
  const severity = select('severity', 'Severity',
    [['', 'Any'], ...SEVERITIES.map((value) => [value, capitalize(value)])],
    context.query.get('severity') || '');
  const device = {input: h('input', {id: uid('device'), name: 'device', type: 'search', value: context.query.get('device') || '', autocomplete: 'off', placeholder: 'device id'})};
  const filters = h('form', {class: 'filters', 'aria-label': 'Filter alarms'},
    status.field, severity.field,
    h('div', {class: 'field'}, h('label', {for: device.input.id}, 'Device'), device.input),
    h('button', {type: 'submit', class: 'secondary'}, 'Apply'));
  const problem = h('div');
  const table = new AlarmTable({caption: 'Alarms', emptyText: 'No alarms match.'});
  const pager = new Pager('Alarm pages', load);

  main.append(h('div', {class: 'page-head'}, h('h1', {}, 'Alarms')),
    filters, problem, h('div', {class: 'card table-card'}, table.element), h('div', {class: 'list-foot'}, h('span'), pager.element));

  const current = () => ({
    status: status.element.value,
    severity: severity.element.value,
    device: device.input.value.trim(),
  });

  async function load() {
    const mine = ++request;
    const query = current();
    context.replaceQuery({...query, status: query.status || 'any'});
    try {
      const page = await get('/alarms', {
        ...query, status: query.status || null, limit: PAGE_SIZE, cursor: pager.cursor,
      });
      if (!alive || mine !== request) return;
      replace(problem);
      table.set(page.items);
      pager.update(page.next_cursor, page.items.length);
    } catch (error) {
      if (!alive || mine !== request) return;
      replace(problem, notice('error', `Could not list alarms: ${errorText(error)}`));
      table.set([]);
      pager.update(null, 0);
    }
  }

  const apply = () => {
    pager.reset();
    load();
  };
  status.element.addEventListener('change', apply);
  severity.element.addEventListener('change', apply);
  filters.addEventListener('submit', (event) => {
    event.preventDefault();
    apply();
  });

  const closeStream = openStream({kinds: ['alarm']}, {
    onEvent(event) {
      if (event.kind !== 'alarm' || !event.alarm) return;
      const alarm = event.alarm;
      const wanted = current();
      const fits = (!wanted.status || wanted.status === alarm.status)
        && (!wanted.severity || wanted.severity === alarm.severity)
        && (!wanted.device || wanted.device === alarm.device_id);
      // New alarms appear on the first page; a changed row stays in place with its new status.
      table.upsert(alarm, {addIfMissing: fits && pager.cursor === null});
    },
    onResync: load,
  });

  load();
  return () => {
    alive = false;
    closeStream();
  };
}

function capitalize(text) {
  return text.charAt(0).toUpperCase() + text.slice(1);
}
