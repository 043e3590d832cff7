// The dashboard's pure functions, run in Node without a browser: where a rule error
// points, how a chart range picks its aggregation window, how queries are built.

import {test} from 'node:test';
import assert from 'node:assert/strict';
import {locateError} from '../../crates/dashboard/assets/pages/rule-form.js';
import {bucketFor} from '../../crates/dashboard/assets/pages/device.js';
import {queryString} from '../../crates/dashboard/assets/api.js';

test('rule errors point at the field and column they name', () => {
  assert.deepEqual(locateError('rule "r1": condition: at column 15: expected an operand, found ">"'), {field: 'condition', column: 15});
  assert.deepEqual(locateError('rule "a \\"b\\"": clear: at column 3: unknown function "foo"'), {field: 'clear', column: 3});
  assert.deepEqual(locateError('for: expected a duration such as 10s, got "x"'), {field: 'for', column: null});
  assert.deepEqual(locateError('match.labels: at most 64 labels'), {field: 'labels', column: null});
  assert.deepEqual(locateError('actions[1].url: expected an http or https URL'), {action: 1});
  assert.equal(locateError('unknown field "colour", expected one of ...'), null);
  assert.equal(locateError('rule "x" already exists'), null);
});

test('chart ranges ask for raw points up to 15 minutes, then about 800 windows', () => {
  const minute = 60_000;
  assert.equal(bucketFor(15 * minute), 0);
  assert.equal(bucketFor(60 * minute), 5_000);
  assert.equal(bucketFor(24 * 60 * minute), 120_000);
  assert.equal(bucketFor(7 * 24 * 60 * minute), 900_000);
  assert.equal(bucketFor(10 * 365 * 24 * 60 * minute), 86_400_000);
  for (const span of [16 * minute, 3 * 60 * minute, 2 * 24 * 60 * minute]) {
    const points = span / bucketFor(span);
    assert.ok(points >= 320 && points <= 1000, `${span} ms gives ${points} points`);
  }
});

test('queries leave out empty values and repeat arrays', () => {
  assert.equal(queryString({prefix: 'ab', type: '', label: null, limit: 50}), '?prefix=ab&limit=50');
  assert.equal(queryString({label: ['site:lyon', 'floor:2']}), '?label=site%3Alyon&label=floor%3A2');
  assert.equal(queryString({}), '');
});
