// Time-series charts with uPlot, loaded on first use (the vendored classic script and
// its stylesheet, at the versioned URLs the page carries), so pages without charts and
// the first paint never wait for it.

import {h, formatNumber, formatTime} from './dom.js';

let loading = null;

/** Loads uPlot once; resolves to the uPlot constructor. */
export function loadUPlot() {
  if (!loading) {
    const root = document.documentElement.dataset;
    loading = new Promise((resolve, reject) => {
      document.head.append(h('link', {rel: 'stylesheet', href: root.uplotCss}));
      const script = h('script', {src: root.uplotJs});
      script.addEventListener('load', () => resolve(window.uPlot));
      script.addEventListener('error', () => {
        loading = null;
        reject(new Error('the chart library failed to load'));
      });
      document.head.append(script);
    });
  }
  return loading;
}

const LINE = '#1d4f91';
const FILL = 'rgba(29, 79, 145, 0.12)';
const HEIGHT = 190;

/**
 * One field's chart: `points` are [ms, value] pairs, oldest first. `window` decides
 * the x range: {from, to} fixed, or {span} for the last `span` ms, sliding with time.
 * `bucket` (ms, or 0 for raw points) makes live points fold into the newest window as a
 * running average, so aggregated history and live data keep one density.
 */
export class Chart {
  constructor(uPlot, container, field, {points, window, bucket}) {
    this.field = field;
    this.window = window;
    this.bucket = bucket;
    this.xs = points.map((point) => point[0]);
    this.ys = points.map((point) => point[1]);
    this.lastCount = 1;
    this.pending = false;
    this.figure = h('figure', {class: 'chart', dataset: {field}});
    this.caption = h('figcaption');
    this.plotArea = h('div', {class: 'plot', role: 'img'});
    this.figure.append(this.caption, this.plotArea);
    container.append(this.figure);
    const width = Math.max(240, this.plotArea.clientWidth || container.clientWidth || 480);
    this.plot = new uPlot({
      width,
      height: HEIGHT,
      ms: 1,
      legend: {show: false},
      cursor: {drag: {x: false, y: false}},
      scales: {
        x: {time: true, range: () => this.range()},
      },
      axes: [
        {stroke: '#39414d', grid: {stroke: '#e3e7ee'}, ticks: {stroke: '#c9d0da'}},
        {stroke: '#39414d', grid: {stroke: '#e3e7ee'}, ticks: {stroke: '#c9d0da'}, size: 56},
      ],
      series: [
        {},
        {label: field, stroke: LINE, fill: FILL, width: 1.5, points: {show: false}, spanGaps: false},
      ],
    }, [this.xs, this.ys], this.plotArea);
    this.resizer = new ResizeObserver(() => {
      const next = this.plotArea.clientWidth;
      if (next > 0 && Math.abs(next - this.plot.width) > 2) this.plot.setSize({width: next, height: HEIGHT});
    });
    this.resizer.observe(this.plotArea);
    this.describe();
  }

  range() {
    if (this.window.span) {
      const to = Date.now();
      return [to - this.window.span, to];
    }
    return [this.window.from, this.window.to];
  }

  /** Adds a live point; redraws on the next frame (one redraw for a burst of points). */
  append(ts, value) {
    if (typeof value !== 'number' || !Number.isFinite(value)) return;
    const last = this.xs.length - 1;
    if (this.bucket > 0) {
      const start = Math.floor(ts / this.bucket) * this.bucket;
      if (last >= 0 && this.xs[last] === start) {
        this.lastCount += 1;
        this.ys[last] += (value - this.ys[last]) / this.lastCount;
      } else if (last < 0 || start > this.xs[last]) {
        this.xs.push(start);
        this.ys.push(value);
        this.lastCount = 1;
      }
    } else if (last < 0 || ts >= this.xs[last]) {
      this.xs.push(ts);
      this.ys.push(value);
    } else {
      // Late point: keep the series sorted, as uPlot needs.
      let index = last;
      while (index > 0 && this.xs[index - 1] > ts) index -= 1;
      this.xs.splice(index, 0, ts);
      this.ys.splice(index, 0, value);
    }
    this.schedule();
  }

  /** Redraws, e.g. every second so a sliding window moves even without data. */
  schedule() {
    if (this.pending) return;
    this.pending = true;
    requestAnimationFrame(() => {
      this.pending = false;
      if (!this.plot) return;
      if (this.window.span) {
        const oldest = Date.now() - this.window.span - (this.bucket || 0);
        let drop = 0;
        while (drop < this.xs.length && this.xs[drop] < oldest) drop += 1;
        if (drop > 0) {
          this.xs.splice(0, drop);
          this.ys.splice(0, drop);
        }
      }
      this.plot.setData([this.xs, this.ys]);
      this.describe();
    });
  }

  describe() {
    const count = this.ys.length;
    const latest = count ? this.ys[count - 1] : null;
    this.caption.replaceChildren(
      h('span', {class: 'field'}, this.field),
      h('span', {class: 'latest'}, count ? formatNumber(latest) : 'no data'),
    );
    const [from, to] = this.range();
    this.plotArea.setAttribute('aria-label',
      `${this.field} from ${formatTime(from)} to ${formatTime(to)}: ${count} points` +
      (count ? `, latest ${formatNumber(latest)}` : ''));
  }

  destroy() {
    this.resizer.disconnect();
    this.plot.destroy();
    this.plot = null;
    this.figure.remove();
  }
}
