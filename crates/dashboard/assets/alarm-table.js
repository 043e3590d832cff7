// The alarms table of the alarms page and of the device page: severity, rule, device,
// status, the values that raised it, and the Acknowledge and Clear buttons.

import {post, segment} from './api.js';
import {h, replace, errorText, formatValues, notice, severityBadge, statusBadge, timeAgo} from './dom.js';

export class AlarmTable {
  /** `showDevice`: a device column (not on the device's own page). */
  constructor({caption, showDevice = true, emptyText = 'No alarms.'}) {
    this.showDevice = showDevice;
    this.emptyText = emptyText;
    this.alarms = [];
    this.body = h('tbody');
    this.message = h('div', {class: 'table-message'});
    const columns = ['Severity', 'Rule', showDevice ? 'Device' : null, 'Status', 'Values', 'Raised', 'Updated', 'Actions']
      .filter(Boolean);
    this.table = h('table', {class: 'list alarms'},
      h('caption', {class: 'visually-hidden'}, caption),
      h('thead', {}, h('tr', {}, columns.map((column) => h('th', {scope: 'col'}, column)))),
      this.body);
    this.empty = h('p', {class: 'muted empty'}, emptyText);
    this.element = h('div', {}, this.message, h('div', {class: 'table-scroll'}, this.table), this.empty);
    this.show();
  }

  /** Replaces the rows. */
  set(alarms) {
    this.alarms = alarms.slice();
    this.show();
  }

  /** An alarm changed (live event or button): updates its row, or adds it on top when `isNew` fits. */
  upsert(alarm, {addIfMissing = false} = {}) {
    const index = this.alarms.findIndex((candidate) => candidate.id === alarm.id);
    if (index >= 0) this.alarms[index] = alarm;
    else if (addIfMissing) this.alarms.unshift(alarm);
    else return;
    this.show();
  }

  show() {
    this.empty.hidden = this.alarms.length > 0;
    this.table.hidden = this.alarms.length === 0;
    replace(this.body, this.alarms.map((alarm) => this.row(alarm)));
  }

  row(alarm) {
    const name = alarm.rule_name || alarm.rule_id;
    const who = `${name} on ${alarm.device_id}`;
    const acknowledge = h('button', {
      type: 'button', class: 'small', disabled: alarm.status !== 'active',
      'aria-label': `Acknowledge ${who}`, onclick: () => this.act(alarm, 'ack', acknowledge),
    }, 'Acknowledge');
    const clear = h('button', {
      type: 'button', class: 'small secondary', disabled: alarm.status === 'cleared',
      'aria-label': `Clear ${who}`, onclick: () => this.act(alarm, 'clear', clear),
    }, 'Clear');
    return h('tr', {dataset: {alarm: alarm.id, status: alarm.status}},
      h('td', {}, severityBadge(alarm.severity)),
      h('td', {}, name),
      this.showDevice ? h('td', {}, h('a', {href: `#/devices/${segment(alarm.device_id)}`, class: 'mono'}, alarm.device_id)) : null,
      h('td', {class: 'status-cell'}, statusBadge(alarm.status), alarm.acknowledged_by
        ? h('span', {class: 'hint block'}, `by ${alarm.acknowledged_by}`) : null),
      h('td', {class: 'mono'}, formatValues(alarm.values)),
      h('td', {}, timeAgo(alarm.created_at)),
      h('td', {}, timeAgo(alarm.updated_at)),
      h('td', {class: 'actions'}, acknowledge, clear));
  }

  async act(alarm, action, button) {
    button.disabled = true;
    replace(this.message);
    try {
      const updated = await post(`/alarms/${segment(alarm.id)}/${action}`);
      const status = action === 'ack' ? 'acknowledged' : 'cleared';
      this.upsert(updated && updated.id ? updated : {...alarm, status, updated_at: new Date().toISOString()});
    } catch (error) {
      button.disabled = false;
      replace(this.message, notice('error',
        `Could not ${action === 'ack' ? 'acknowledge' : 'clear'} the alarm: ${errorText(error)}`));
    }
  }
}
