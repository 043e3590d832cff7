// Rules: the list, with links to edit and a delete button.

import {get, del, segment} from '../api.js';
import {Pager} from '../pager.js';
import {h, replace, errorText, notice, severityBadge} from '../dom.js';

export const title = () => 'Rules';

const PAGE_SIZE = 50;

export function render(main) {
  let alive = true;
  const body = h('tbody');
  const problem = h('div');
  const empty = h('p', {class: 'muted empty', hidden: true}, 'No rules yet. ', h('a', {href: '#/rules/new'}, 'Create one'), '.');
  const table = h('table', {class: 'list'},
    h('caption', {class: 'visually-hidden'}, 'Rules'),
    h('thead', {}, h('tr', {}, ['Name', 'Condition', 'Applies to', 'Severity', 'Actions', 'Enabled']
      .map((column) => h('th', {scope: 'col'}, column)), h('th', {scope: 'col'}, h('span', {class: 'visually-hidden'}, 'Manage')))),
    body);
  const pager = new Pager('Rule pages', load);
  main.append(
    h('div', {class: 'page-head'}, h('h1', {}, 'Rules'), h('a', {href: '#/rules/new', class: 'button'}, 'New rule')),
    problem, h('div', {class: 'card table-card'}, h('div', {class: 'table-scroll'}, table), empty),
    h('div', {class: 'list-foot'}, h('span'), pager.element));

  async function load() {
    try {
      const page = await get('/rules', {limit: PAGE_SIZE, cursor: pager.cursor});
      if (!alive) return;
      replace(problem);
      empty.hidden = page.items.length > 0;
      table.hidden = page.items.length === 0;
      replace(body, page.items.map(row));
      pager.update(page.next_cursor, page.items.length);
    } catch (error) {
      if (!alive) return;
      replace(problem, notice('error', `Could not list rules: ${errorText(error)}`));
    }
  }

  function row(rule) {
    const remove = h('button', {
      type: 'button', class: 'small danger', 'aria-label': `Delete rule ${rule.name}`,
      onclick: async () => {
        if (!window.confirm(`Delete the rule "${rule.name}"? Its open alarms stay as they are.`)) return;
        remove.disabled = true;
        try {
          await del(`/rules/${segment(rule.id)}`);
          load();
        } catch (error) {
          remove.disabled = false;
          replace(problem, notice('error', `Could not delete the rule: ${errorText(error)}`));
        }
      },
    }, 'Delete');
    return h('tr', {dataset: {rule: rule.id}},
      h('th', {scope: 'row'}, h('a', {href: `#/rules/${segment(rule.id)}`}, rule.name || rule.id)),
      h('td', {}, h('code', {}, rule.condition), rule.for ? h('span', {class: 'hint block'}, `for ${rule.for}`) : null,
        rule.clear ? h('span', {class: 'hint block'}, 'clear when ', h('code', {}, rule.clear)) : null),
      h('td', {}, describeMatch(rule.match)),
      h('td', {}, severityBadge(rule.severity)),
      h('td', {}, (rule.actions || []).map((action) => action.type).join(', ') || '—'),
      h('td', {}, rule.enabled === false ? 'No' : 'Yes'),
      h('td', {class: 'actions'}, h('a', {href: `#/rules/${segment(rule.id)}`, class: 'button small secondary', 'aria-label': `Edit rule ${rule.name}`}, 'Edit'), remove));
  }

  load();
  return () => {
    alive = false;
  };
}

/** "every device", "type sensor, site=lyon", "3 devices". */
export function describeMatch(match) {
  const parts = [];
  const devices = (match && match.devices) || [];
  if (devices.length === 1) parts.push(`device ${devices[0]}`);
  else if (devices.length > 1) parts.push(`${devices.length} devices`);
  if (match && match.type) parts.push(`type ${match.type}`);
  for (const [key, value] of Object.entries((match && match.labels) || {})) parts.push(`${key}=${value}`);
  return parts.length ? parts.join(', ') : 'every device';
}
