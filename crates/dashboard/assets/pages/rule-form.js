// Create or edit a rule. The server checks the expressions; its 422 answer names the part
// and the column (`rule "r1": condition: at column 15: expected an operand, found ">"`),
// which is shown next to that field with the column marked.

import {get, post, put, del, segment} from '../api.js';
import {h, replace, errorText, notice, uid, SEVERITIES} from '../dom.js';

export const title = (context) => (context.params[0] === 'new' ? 'New rule' : 'Edit rule');

const ACTION_TYPES = [
  ['alarm', 'Open an alarm'],
  ['webhook', 'Call a webhook'],
  ['republish', 'Republish on MQTT'],
  ['command', 'Send a command'],
];

export function render(main, context) {
  const ruleId = context.params[0] === 'new' ? null : context.params[0];
  let alive = true;

  const fields = {};
  /** A labelled input with a hint and an error line, wired with aria-describedby. */
  const field = (key, label, input, hint) => {
    const id = uid(key);
    input.id = id;
    input.name = key;
    const error = h('p', {id: `${id}-error`, class: 'field-error'});
    const marker = h('div', {class: 'expr-marker', 'aria-hidden': 'true', hidden: true});
    const hintElement = hint ? h('p', {id: `${id}-hint`, class: 'hint'}, hint) : null;
    input.setAttribute('aria-describedby', [hint ? `${id}-hint` : null, `${id}-error`].filter(Boolean).join(' '));
    fields[key] = {input, error, marker};
    return h('div', {class: 'field'}, h('label', {for: id}, label), input, marker, error, hintElement);
  };
  const text = (props = {}) => h('input', {type: 'text', autocomplete: 'off', spellcheck: 'false', ...props});

  const severity = h('select', {}, SEVERITIES.map((value) => h('option', {value, selected: value === 'medium'}, value)));
  const enabledId = uid('enabled');
  const enabled = h('input', {type: 'checkbox', id: enabledId, checked: true});
  const actionList = h('ol', {class: 'actions-list'});
  const formError = h('div', {role: 'alert'});
  const saveButton = h('button', {type: 'submit'}, ruleId ? 'Save changes' : 'Create rule');

  const form = h('form', {class: 'rule-form', novalidate: true},
    h('fieldset', {},
      h('legend', {}, 'Rule'),
      h('div', {class: 'field-row'},
        h('div', {class: 'grow'}, field('name', 'Name', text({required: true, placeholder: 'Overheating'}))),
        h('div', {}, field('severity', 'Severity', severity))),
      h('div', {class: 'check'}, enabled, h('label', {for: enabledId}, 'Enabled'))),
    h('fieldset', {},
      h('legend', {}, 'Applies to'),
      h('p', {class: 'hint'}, 'Leave all three empty for every device; filled ones must all match.'),
      h('div', {class: 'field-row'},
        h('div', {class: 'grow'}, field('devices', 'Devices', text({placeholder: 'boiler-1, boiler-2'}), 'Device ids, separated by commas')),
        h('div', {}, field('type', 'Device type', text({placeholder: 'sensor'}))),
        h('div', {class: 'grow'}, field('labels', 'Labels', text({placeholder: 'site=lyon, floor=2'}), 'key=value pairs, separated by commas')))),
    h('fieldset', {},
      h('legend', {}, 'Condition'),
      field('condition', 'Raise when', text({required: true, class: 'mono', placeholder: 'temperature > 30 and humidity < 80'}),
        h('span', {}, 'Fields, numbers, ', h('code', {}, '< <= > >= == !='), ', ', h('code', {}, 'and or not'), ', ',
          h('code', {}, '+ - * / %'), ', ', h('code', {}, 'abs min max delta rate'), '.')),
      h('div', {class: 'field-row'},
        h('div', {}, field('for', 'For', text({placeholder: '10s', class: 'short'}), 'Optional: how long it must hold (10s, 5m)')),
        h('div', {class: 'grow'}, field('clear', 'Clear when', text({class: 'mono', placeholder: 'temperature < 28'}),
          'Optional: without it, the alarm clears when the condition stops holding')))),
    h('fieldset', {},
      h('legend', {}, 'Actions'),
      actionList,
      h('button', {type: 'button', class: 'secondary small', onclick: () => addAction({type: 'webhook'}, true)}, 'Add an action')),
    formError,
    h('div', {class: 'form-buttons'},
      saveButton,
      h('a', {href: '#/rules', class: 'button secondary'}, 'Cancel'),
      ruleId ? h('button', {type: 'button', class: 'danger', onclick: remove}, 'Delete rule') : null));

  main.append(
    h('p', {class: 'breadcrumb'}, h('a', {href: '#/rules'}, 'Rules'), ' / ', ruleId ? h('span', {class: 'mono'}, ruleId) : 'new'),
    h('h1', {}, ruleId ? 'Edit rule' : 'New rule'),
    form);

  // --- Actions --------------------------------------------------------------------------
  let actionCount = 0;
  function addAction(action, focus = false) {
    actionCount += 1;
    const index = actionCount;
    const typeId = uid('action-type');
    const type = h('select', {id: typeId}, ACTION_TYPES.map(([value, label]) => h('option', {value, selected: value === action.type}, label)));
    const settings = h('div', {class: 'action-settings'});
    const error = h('p', {class: 'field-error'});
    const item = h('li', {class: 'action'},
      h('div', {class: 'field'}, h('label', {for: typeId}, `Action ${index}`), type),
      settings,
      h('button', {type: 'button', class: 'small secondary remove', onclick: () => item.remove()}, h('span', {'aria-hidden': 'true'}, '✕ '), 'Remove', h('span', {class: 'visually-hidden'}, ` action ${index}`)),
      error);
    item.actionError = error;
    const showSettings = () => {
      const kind = type.value;
      const input = (key, label, props, hint) => {
        const id = uid(`action-${key}`);
        const element = key === 'params'
          ? h('textarea', {id, rows: 2, class: 'mono', spellcheck: 'false', ...props})
          : h('input', {id, type: key === 'url' ? 'url' : 'text', autocomplete: 'off', spellcheck: 'false', ...props});
        element.dataset.key = key;
        return h('div', {class: `field ${key === 'params' ? 'grow' : ''}`}, h('label', {for: id}, label), element,
          hint ? h('p', {class: 'hint'}, hint) : null);
      };
      if (kind === 'alarm') replace(settings, h('p', {class: 'hint'}, 'Opens an alarm with the rule\'s severity; it clears with the rule.'));
      if (kind === 'webhook') replace(settings, input('url', 'URL', {value: action.url || '', placeholder: 'https://example.com/hook', required: true}));
      if (kind === 'republish') replace(settings, input('topic', 'Topic', {value: action.topic || '', placeholder: 'alerts/{device}', required: true}, '{device} becomes the device id'));
      if (kind === 'command') {
        replace(settings,
          input('name', 'Command', {value: action.name || '', placeholder: 'reboot', required: true}),
          input('params', 'Parameters (JSON)', {value: JSON.stringify(action.params || {})}));
      }
    };
    type.addEventListener('change', () => {
      action = {type: type.value};
      showSettings();
    });
    showSettings();
    item.readAction = () => {
      const kind = type.value;
      const value = (key) => {
        const element = settings.querySelector(`[data-key="${key}"]`);
        return element ? element.value.trim() : '';
      };
      if (kind === 'alarm') return {type: 'alarm'};
      if (kind === 'webhook') {
        if (!value('url')) throw fieldProblem(item, 'url', 'Give the webhook URL.');
        return {type: 'webhook', url: value('url')};
      }
      if (kind === 'republish') {
        if (!value('topic')) throw fieldProblem(item, 'topic', 'Give the topic to publish on.');
        return {type: 'republish', topic: value('topic')};
      }
      if (!value('name')) throw fieldProblem(item, 'name', 'Give the command name.');
      let params = {};
      try {
        params = value('params') ? JSON.parse(value('params')) : {};
        if (params === null || typeof params !== 'object' || Array.isArray(params)) throw new Error('expected a JSON object');
      } catch (problem) {
        throw fieldProblem(item, 'params', `Parameters: ${problem.message}`);
      }
      return {type: 'command', name: value('name'), params};
    };
    actionList.append(item);
    if (focus) type.focus();
  }

  function fieldProblem(item, key, message) {
    return {item, key, message};
  }

  // --- Errors ------------------------------------------------------------------------------
  function clearErrors() {
    replace(formError);
    for (const {input, error, marker} of Object.values(fields)) {
      error.textContent = '';
      marker.hidden = true;
      input.removeAttribute('aria-invalid');
    }
    for (const item of actionList.children) item.actionError.textContent = '';
  }

  function showFieldError(key, message, column) {
    const target = fields[key];
    target.error.textContent = message;
    target.input.setAttribute('aria-invalid', 'true');
    if (column && target.input.tagName === 'INPUT') {
      const value = target.input.value;
      const at = Math.min(Math.max(column - 1, 0), value.length);
      replace(target.marker,
        h('span', {}, value.slice(0, at)),
        h('mark', {}, value.slice(at, at + 1) || ' '),
        h('span', {}, value.slice(at + 1)));
      target.marker.hidden = false;
      target.input.focus();
      target.input.setSelectionRange(at, Math.min(at + 1, value.length));
    } else {
      target.input.focus();
    }
  }

  /** Puts the server's `detail` next to the field it names, else above the buttons. */
  function showServerError(detail) {
    const location = locateError(detail);
    // The rule's name or placeholder id adds nothing next to its own field.
    const message = String(detail).replace(/^rule\s+"(?:[^"\\]|\\.)*":\s*/, '');
    if (location && location.field && fields[location.field]) {
      showFieldError(location.field, message, location.column);
      return;
    }
    if (location && location.action !== undefined && actionList.children[location.action]) {
      const item = actionList.children[location.action];
      item.actionError.textContent = message;
      item.querySelector('select').focus();
      return;
    }
    replace(formError, notice('error', detail));
    formError.scrollIntoView({block: 'nearest'});
  }

  // --- Load, save, delete ---------------------------------------------------------------------
  function fill(rule) {
    fields.name.input.value = rule.name || '';
    severity.value = rule.severity || 'medium';
    enabled.checked = rule.enabled !== false;
    fields.devices.input.value = (rule.match?.devices || []).join(', ');
    fields.type.input.value = rule.match?.type || '';
    fields.labels.input.value = Object.entries(rule.match?.labels || {}).map(([key, value]) => `${key}=${value}`).join(', ');
    fields.condition.input.value = rule.condition || '';
    fields.for.input.value = rule.for || '';
    fields.clear.input.value = rule.clear || '';
    actionList.replaceChildren();
    for (const action of rule.actions || []) addAction(action);
  }

  function read() {
    const name = fields.name.input.value.trim();
    if (!name) throw {field: 'name', message: 'Give the rule a name.'};
    const condition = fields.condition.input.value.trim();
    if (!condition) throw {field: 'condition', message: 'Write the condition that raises the alarm, e.g. temperature > 30.'};
    const labels = {};
    for (const pair of fields.labels.input.value.split(',').map((item) => item.trim()).filter(Boolean)) {
      const split = pair.indexOf('=');
      if (split <= 0) throw {field: 'labels', message: `"${pair}" is not key=value.`};
      labels[pair.slice(0, split).trim()] = pair.slice(split + 1).trim();
    }
    const actions = [...actionList.children].map((item) => item.readAction());
    const type = fields.type.input.value.trim();
    const forText = fields.for.input.value.trim();
    const clear = fields.clear.input.value.trim();
    return {
      name,
      match: {
        devices: fields.devices.input.value.split(',').map((item) => item.trim()).filter(Boolean),
        type: type || null,
        labels,
      },
      condition,
      for: forText || null,
      clear: clear || null,
      severity: severity.value,
      actions,
      enabled: enabled.checked,
    };
  }

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    clearErrors();
    let rule;
    try {
      rule = read();
    } catch (problem) {
      if (problem.item) {
        problem.item.actionError.textContent = problem.message;
        const element = problem.item.querySelector(`[data-key="${problem.key}"]`);
        if (element) element.focus();
      } else if (problem.field) {
        showFieldError(problem.field, problem.message);
      } else {
        throw problem;
      }
      return;
    }
    saveButton.disabled = true;
    try {
      if (ruleId) await put(`/rules/${segment(ruleId)}`, rule);
      else await post('/rules', rule);
      if (alive) context.navigate('/rules');
    } catch (error) {
      if (alive) showServerError(errorText(error));
    } finally {
      saveButton.disabled = false;
    }
  });

  async function remove() {
    if (!window.confirm(`Delete the rule "${fields.name.input.value || ruleId}"?`)) return;
    try {
      await del(`/rules/${segment(ruleId)}`);
      if (alive) context.navigate('/rules');
    } catch (error) {
      replace(formError, notice('error', `Could not delete the rule: ${errorText(error)}`));
    }
  }

  if (ruleId) {
    form.setAttribute('aria-busy', 'true');
    get(`/rules/${segment(ruleId)}`).then((rule) => {
      if (!alive) return;
      fill(rule);
      form.removeAttribute('aria-busy');
    }).catch((error) => {
      if (!alive) return;
      form.removeAttribute('aria-busy');
      replace(formError, notice('error', error.status === 404
        ? `There is no rule ${ruleId}.`
        : `Could not load the rule: ${errorText(error)}`));
    });
  } else {
    addAction({type: 'alarm'});
    fields.name.input.focus();
  }

  return () => {
    alive = false;
  };
}

/**
 * Which field an API error is about, from its detail:
 * `rule "r1": condition: at column 15: ...` → {field: 'condition', column: 15};
 * `actions[1].url: ...` → {action: 1}. Null when it names none.
 */
export function locateError(detail) {
  const rest = String(detail).replace(/^rule\s+"(?:[^"\\]|\\.)*":\s*/, '');
  const columnMatch = /\bat column (\d+)/.exec(rest);
  const column = columnMatch ? Number(columnMatch[1]) : null;
  const head = /^([a-z_]+)(?:\[(\d+)\])?(?:\.([a-z_]+))?\s*:/.exec(rest);
  if (!head) return null;
  const [, name, index, sub] = head;
  if (name === 'match') return {field: sub && ['devices', 'type', 'labels'].includes(sub) ? sub : 'devices', column: null};
  if (name === 'actions') return index !== undefined ? {action: Number(index)} : null;
  if (['name', 'condition', 'clear', 'for', 'severity'].includes(name)) return {field: name, column};
  return null;
}
