// The device list: search by id prefix, filter by type and label, one page at a time
// (never the whole fleet), with presence kept live for the devices on screen.

import {get, segment} from '../api.js';
import {openStream} from '../stream.js';
import {Pager} from '../pager.js';
import {h, replace, debounce, errorText, labelChips, notice, presence, timeAgo, uid} from '../dom.js';

export const title = () => 'Devices';

const PAGE_SIZE = 50;

export function render(main, context) {
  let alive = true;
  let request = 0;
  let closeStream = null;
  const field = (name, label, placeholder, hint) => {
    const id = uid(name);
    const input = h('input', {
      id, name, type: 'search', value: context.query.get(name) || '', placeholder,
      autocomplete: 'off', spellcheck: 'false', 'aria-describedby': hint ? `${id}-hint` : null,
    });
    return {input, element: h('div', {class: 'field'},
      h('label', {for: id}, label), input, hint ? h('p', {id: `${id}-hint`, class: 'hint'}, hint) : null)};
  };
  const prefix = field('prefix', 'Search by id', 'sensor-00', 'Devices whose id starts with this');
  const type = field('type', 'Type', 'sensor');
  const label = field('label', 'Label', 'site:lyon', 'key:value');
  const form = h('form', {class: 'filters', role: 'search', 'aria-label': 'Filter devices'},
    prefix.element, type.element, label.element,
    h('button', {type: 'submit', class: 'secondary'}, 'Search'));
  const summary = h('p', {class: 'muted', role: 'status'});
  const body = h('tbody');
  const table = h('table', {class: 'list', 'aria-describedby': 'devices-summary'},
    h('caption', {class: 'visually-hidden'}, 'Devices'),
    h('thead', {}, h('tr', {},
      h('th', {scope: 'col'}, 'Status'), h('th', {scope: 'col'}, 'ID'), h('th', {scope: 'col'}, 'Name'),
      h('th', {scope: 'col'}, 'Type'), h('th', {scope: 'col'}, 'Labels'), h('th', {scope: 'col'}, 'Last seen'))),
    body);
  summary.id = 'devices-summary';
  const problem = h('div');
  const pager = new Pager('Device pages', load);
  pager.cursor = context.query.get('cursor');

  main.append(
    h('div', {class: 'page-head'}, h('h1', {}, 'Devices')),
    form, problem, h('div', {class: 'card table-card'}, table), h('div', {class: 'list-foot'}, summary, pager.element));

  const filters = () => ({
    prefix: prefix.input.value.trim(),
    type: type.input.value.trim(),
    label: label.input.value.trim(),
  });

  async function load() {
    const mine = ++request;
    const query = {...filters(), limit: PAGE_SIZE, cursor: pager.cursor};
    context.replaceQuery({...filters(), cursor: pager.cursor});
    body.setAttribute('aria-busy', 'true');
    try {
      const page = await get('/devices', query);
      if (!alive || mine !== request) return;
      replace(problem);
      showPage(page.items);
      pager.update(page.next_cursor, page.items.length);
      const first = pager.previous.length * PAGE_SIZE;
      summary.textContent = page.items.length === 0
        ? 'No devices match.'
        : `Devices ${first + 1}–${first + page.items.length}${page.next_cursor ? ', more on the next page' : ''}.`;
      watch(page.items.map((device) => device.id));
    } catch (error) {
      if (!alive || mine !== request) return;
      replace(problem, notice('error', `Could not list devices: ${errorText(error)}`));
      replace(body);
      pager.update(null, 0);
      summary.textContent = '';
    } finally {
      if (mine === request) body.removeAttribute('aria-busy');
    }
  }

  function showPage(devices) {
    replace(body, devices.map((device) => h('tr', {dataset: {device: device.id}},
      h('td', {class: 'presence-cell'}, presence(device.online)),
      h('td', {}, h('a', {href: `#/devices/${segment(device.id)}`, class: 'mono'}, device.id)),
      h('td', {}, device.name || h('span', {class: 'muted'}, '—')),
      h('td', {}, device.type || h('span', {class: 'muted'}, '—')),
      h('td', {}, labelChips(device.labels)),
      h('td', {class: 'seen'}, timeAgo(device.last_seen)))));
  }

  /** Live presence for the devices on this page only. */
  function watch(ids) {
    if (closeStream) closeStream();
    closeStream = null;
    if (ids.length === 0) return;
    closeStream = openStream({devices: ids, kinds: ['presence']}, {
      onEvent(event) {
        if (event.kind !== 'presence') return;
        const row = [...body.rows].find((candidate) => candidate.dataset.device === event.device_id);
        if (!row) return;
        replace(row.querySelector('.presence-cell'), presence(event.online));
        replace(row.querySelector('.seen'), timeAgo(event.ts));
      },
      onResync: load,
    });
  }

  const search = () => {
    pager.reset();
    load();
  };
  const searchSoon = debounce(search, 250);
  for (const input of [prefix.input, type.input, label.input]) input.addEventListener('input', searchSoon);
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    searchSoon.cancel();
    search();
  });

  load();
  return () => {
    alive = false;
    searchSoon.cancel();
    if (closeStream) closeStream();
  };
}
