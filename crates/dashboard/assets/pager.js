// Cursor pagination for list pages: the API gives `next_cursor`; going back replays the
// cursors seen on the way (cursors are opaque, so there is no other way back).

import {h} from './dom.js';

export class Pager {
  /** `onChange()` is called after Previous or Next; read `cursor` then. */
  constructor(label, onChange) {
    this.cursor = null;
    this.previous = [];
    this.next = null;
    this.onChange = onChange;
    this.previousButton = h('button', {type: 'button', class: 'secondary', onclick: () => this.back()}, '← Previous');
    this.nextButton = h('button', {type: 'button', class: 'secondary', onclick: () => this.forward()}, 'Next →');
    this.position = h('span', {class: 'muted', 'aria-live': 'polite'});
    this.element = h('nav', {class: 'pager', 'aria-label': label}, this.previousButton, this.position, this.nextButton);
    this.update(null, 0);
  }

  /** Back to the first page (filters changed). */
  reset() {
    this.cursor = null;
    this.previous = [];
  }

  /** Shows the state after a page of `count` items with this `next_cursor`. */
  update(nextCursor, count) {
    this.next = nextCursor || null;
    const page = this.previous.length + 1;
    this.position.textContent = `Page ${page}`;
    // One page and nothing more: no pager to show.
    this.element.hidden = page === 1 && !this.next;
    this.previousButton.disabled = this.previous.length === 0;
    this.nextButton.disabled = !this.next;
  }

  forward() {
    if (!this.next) return;
    this.previous.push(this.cursor);
    this.cursor = this.next;
    this.onChange();
  }

  back() {
    if (this.previous.length === 0) return;
    this.cursor = this.previous.pop();
    this.onChange();
  }
}
