// midge page: the dashboard's widgets. Each kind is a class over Widget; the dashboard
// (dashboard.js) creates them from their definitions and hands them messages.
'use strict';
(function () {
  const { $, el, svg, setAttrs, api, toast, fmtNumber, fmtCount, fmtClock, fmtDateTime, ago, parseDuration, topicMatches, getPath, parsePayload, extract, asNumber, niceStep } = window.midge;

  const TIME_STEPS = [1e3, 2e3, 5e3, 1e4, 15e3, 3e4, 6e4, 12e4, 3e5, 6e5, 9e5, 18e5, 36e5, 72e5, 108e5, 216e5, 432e5, 864e5, 1728e5, 6048e5];

  // ---------- widgets ----------

  class Widget {
    constructor(def, key) {
      this.def = def;
      this.key = key;
      const title = def.title || def.topic;
      this.footerLeft = el('span', { 'data-role': 'updated', text: 'waiting for data' });
      this.footerRight = el('span', { class: 'right' });
      this.body = el('div', { class: 'body' });
      this.controls = el('div', { class: 'controls' });
      const width = Math.min(4, Math.max(1, def.width || 1));
      this.card = el('article', {
        class: 'card widget ' + def.kind + (width > 1 ? ' span-' + width : ''),
        'data-widget-id': key,
        'data-kind': def.kind,
        'data-value': '',
      },
        el('header', null, el('h3', { text: title, title: title }), el('span', { class: 'topic', text: def.topic, title: def.topic }), this.controls),
        this.body,
        el('footer', null, this.footerLeft, this.footerRight));
      this.lastTs = null;
    }
    // messages whose topic matches def.topic
    handle(msg) {
      const parsed = parsePayload(msg.text);
      const value = extract(parsed, this.def.field);
      if (value === undefined) return;
      this.lastTs = msg.ts;
      this.card.dataset.value = typeof value === 'object' ? JSON.stringify(value) : String(value);
      this.update(value, msg, parsed);
      this.tick();
    }
    tick() {
      if (this.lastTs != null) {
        this.footerLeft.textContent = 'updated ' + fmtClock(this.lastTs, true);
        this.footerLeft.title = ago(this.lastTs);
      }
    }
    update() {}
    load() { return Promise.resolve(); }
    destroy() { if (this.observer) this.observer.disconnect(); }
  }

  class ValueWidget extends Widget {
    constructor(def, key) {
      super(def, key);
      this.big = el('span', { class: 'big', 'data-role': 'value', text: '–' });
      this.body.append(el('div', null, this.big, def.unit ? el('span', { class: 'unit', text: def.unit }) : null));
    }
    update(value) {
      const n = asNumber(value);
      if (n != null && typeof value !== 'boolean') {
        this.big.textContent = fmtNumber(n, this.def.decimals);
        this.big.classList.remove('text');
      } else {
        this.big.textContent = typeof value === 'object' ? JSON.stringify(value) : String(value);
        this.big.classList.add('text');
      }
    }
  }

  function polar(cx, cy, r, deg) {
    const a = (deg - 90) * Math.PI / 180;
    return [cx + r * Math.cos(a), cy + r * Math.sin(a)];
  }

  function arc(cx, cy, r, from, to) {
    const [x0, y0] = polar(cx, cy, r, from);
    const [x1, y1] = polar(cx, cy, r, to);
    const large = to - from > 180 ? 1 : 0;
    return `M ${x0.toFixed(2)} ${y0.toFixed(2)} A ${r} ${r} 0 ${large} 1 ${x1.toFixed(2)} ${y1.toFixed(2)}`;
  }

  class GaugeWidget extends Widget {
    constructor(def, key) {
      super(def, key);
      this.min = def.min != null ? def.min : 0;
      this.max = def.max != null ? def.max : 100;
      if (!(this.max > this.min)) this.max = this.min + 1;
      const START = -135, END = 135;
      this.start = START; this.end = END;
      this.fill = svg('path', { class: 'fill', d: arc(100, 100, 78, START, START + 0.01) });
      this.reading = svg('text', { class: 'reading', x: 100, y: 104, 'text-anchor': 'middle', 'data-role': 'value', text: '–' });
      const [lx, ly] = polar(100, 100, 78, START);
      const [rx, ry] = polar(100, 100, 78, END);
      this.svg = svg('svg', { viewBox: '0 0 200 170', role: 'img', 'aria-label': def.title || def.topic, 'data-role': 'gauge' },
        svg('path', { class: 'track', d: arc(100, 100, 78, START, END) }),
        this.fill,
        this.reading,
        svg('text', { class: 'unit', x: 100, y: 128, 'text-anchor': 'middle', text: def.unit || '' }),
        svg('text', { class: 'limit', x: lx, y: ly + 24, 'text-anchor': 'middle', text: fmtNumber(this.min) }),
        svg('text', { class: 'limit', x: rx, y: ry + 24, 'text-anchor': 'middle', text: fmtNumber(this.max) }));
      this.body.classList.add('gauge');
      this.body.append(this.svg);
    }
    update(value) {
      const n = asNumber(value);
      if (n == null) { this.reading.textContent = String(value); return; }
      this.reading.textContent = fmtNumber(n, this.def.decimals);
      const f = Math.min(1, Math.max(0, (n - this.min) / (this.max - this.min)));
      const to = this.start + Math.max(0.01, f * (this.end - this.start));
      this.fill.setAttribute('d', arc(100, 100, 78, this.start, to));
      this.fill.classList.toggle('high', f >= 0.9);
      this.card.dataset.fraction = f.toFixed(3);
    }
  }

  class ChartWidget extends Widget {
    constructor(def, key) {
      super(def, key);
      this.windowMs = parseDuration(def.window) || 36e5;
      this.points = [];
      this.current = el('span', { class: 'current', 'data-role': 'value' });
      this.footerRight.append(this.current);
      this.svg = svg('svg', { 'data-role': 'chart', role: 'img', 'aria-label': def.title || def.topic });
      this.body.append(this.svg);
      this.card.dataset.points = '0';
      this.note = '';
      this.observer = new ResizeObserver(() => this.schedule());
      this.observer.observe(this.body);
    }
    bucketMs() {
      if (this.def.bucket != null && this.def.bucket !== '') {
        const b = parseDuration(this.def.bucket);
        if (b != null) return b;
      }
      return Math.max(1000, Math.round(this.windowMs / 240));
    }
    async load() {
      const d = this.def;
      const q = new URLSearchParams({
        field: d.field || 'value',
        topic: d.topic,
        since: '-' + this.windowMs,
        bucket: String(this.bucketMs()),
        agg: 'avg',
        limit: '2000',
      });
      try {
        const r = await api('/api/v1/tables/' + encodeURIComponent(d.table || 'telemetry') + '/series?' + q);
        const history = r.points.map((p) => [p.ts, p.value]);
        const firstLive = this.points.length ? this.points[0][0] : Infinity;
        this.points = history.filter((p) => p[0] < firstLive).concat(this.points);
        if (history.length) {
          const last = history[history.length - 1];
          if (this.lastTs == null) {
            this.current.textContent = fmtNumber(last[1], d.decimals) + (d.unit ? ' ' + d.unit : '');
            this.footerLeft.textContent = history.length + ' stored points';
          }
        }
        this.note = history.length ? '' : 'no stored history yet';
      } catch (e) {
        this.note = e.status === 404 ? 'no table ' + (d.table || 'telemetry') + ' yet' : e.status === 503 ? 'no history (no series store)' : 'history: ' + e.message;
      }
      this.schedule();
    }
    update(value, msg) {
      const n = asNumber(value);
      if (n == null) return;
      this.points.push([msg.ts, n]);
      if (this.points.length > 5000) this.points.splice(0, this.points.length - 5000);
      this.current.textContent = fmtNumber(n, this.def.decimals) + (this.def.unit ? ' ' + this.def.unit : '');
      this.schedule();
    }
    schedule() {
      if (this.pending) return;
      this.pending = true;
      requestAnimationFrame(() => { this.pending = false; this.draw(); });
    }
    draw() {
      const W = Math.max(200, this.body.clientWidth || 400);
      const H = Math.max(150, this.body.clientHeight || 180);
      const s = this.svg;
      s.setAttribute('viewBox', `0 0 ${W} ${H}`);
      s.replaceChildren();
      const now = Date.now();
      const t0 = now - this.windowMs;
      const pts = this.points.filter((p) => p[0] >= t0 - this.bucketMs());
      this.card.dataset.points = String(pts.length);
      const pad = { l: 44, r: 12, t: 10, b: 22 };
      const pw = W - pad.l - pad.r, ph = H - pad.t - pad.b;
      let lo = this.def.min, hi = this.def.max;
      if (lo == null || hi == null) {
        let mn = Infinity, mx = -Infinity;
        for (const p of pts) { if (p[1] < mn) mn = p[1]; if (p[1] > mx) mx = p[1]; }
        if (!isFinite(mn)) { mn = 0; mx = 1; }
        if (mn === mx) { mn -= 1; mx += 1; }
        const m = (mx - mn) * 0.08;
        if (lo == null) lo = mn - m;
        if (hi == null) hi = mx + m;
      }
      if (!(hi > lo)) hi = lo + 1;
      const step = niceStep(hi - lo, Math.max(3, Math.min(6, Math.floor(ph / 40))));
      const x = (t) => pad.l + (t - t0) / this.windowMs * pw;
      const y = (v) => pad.t + (1 - (v - lo) / (hi - lo)) * ph;
      // y grid and labels
      for (let v = Math.ceil(lo / step) * step; v <= hi + 1e-9; v += step) {
        const yy = y(v);
        s.append(svg('line', { class: 'gridline', x1: pad.l, x2: W - pad.r, y1: yy, y2: yy }));
        s.append(svg('text', { class: 'tick', x: pad.l - 6, y: yy + 4, 'text-anchor': 'end', text: fmtNumber(Number(v.toPrecision(6))) }));
      }
      // time labels
      const tstep = TIME_STEPS.find((st) => this.windowMs / st <= Math.max(2, Math.floor(pw / 90))) || 6048e5;
      const offset = new Date().getTimezoneOffset() * 6e4;
      for (let t = Math.ceil((t0 - offset) / tstep) * tstep + offset; t <= now; t += tstep) {
        const xx = x(t);
        s.append(svg('line', { class: 'gridline', x1: xx, x2: xx, y1: pad.t, y2: H - pad.b }));
        const label = tstep >= 864e5 ? new Date(t).toLocaleDateString([], { month: 'short', day: 'numeric' }) : fmtClock(t, tstep < 6e4);
        if (xx > pad.l + 24 && xx < W - pad.r - 24) s.append(svg('text', { class: 'tick', x: xx, y: H - 6, 'text-anchor': 'middle', text: label }));
      }
      s.append(svg('line', { class: 'axis', x1: pad.l, x2: W - pad.r, y1: H - pad.b, y2: H - pad.b }));
      if (!pts.length) {
        s.append(svg('text', { class: 'nodata', x: pad.l + pw / 2, y: pad.t + ph / 2, 'text-anchor': 'middle', text: this.note || 'waiting for data' }));
        return;
      }
      const clampY = (v) => Math.min(H - pad.b, Math.max(pad.t, y(v)));
      const coords = pts.map((p) => `${Math.max(pad.l, x(p[0])).toFixed(1)},${clampY(p[1]).toFixed(1)}`);
      const first = pts[0], last = pts[pts.length - 1];
      s.append(svg('path', {
        class: 'area',
        d: `M ${Math.max(pad.l, x(first[0])).toFixed(1)},${H - pad.b} L ${coords.join(' L ')} L ${Math.max(pad.l, x(last[0])).toFixed(1)},${H - pad.b} Z`,
      }));
      s.append(svg('polyline', { class: 'line', 'data-role': 'line', points: coords.join(' ') }));
      s.append(svg('circle', { class: 'last', cx: Math.max(pad.l, x(last[0])), cy: clampY(last[1]), r: 3.5 }));
    }
    tick() {
      super.tick();
      this.schedule();
    }
  }

  // Web Mercator, in world units 0..1
  function mercX(lon) { return (lon + 180) / 360; }
  function mercY(lat) {
    const l = Math.max(-85.05, Math.min(85.05, lat)) * Math.PI / 180;
    return (1 - Math.log(Math.tan(l) + 1 / Math.cos(l)) / Math.PI) / 2;
  }
  function invY(y) { return Math.atan(Math.sinh(Math.PI * (1 - 2 * y))) * 180 / Math.PI; }
  const DEG_STEPS = [0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 45, 90];

  class MapWidget extends Widget {
    constructor(def, key) {
      super(def, key);
      this.markers = new Map();
      this.svg = svg('svg', { 'data-role': 'map', role: 'img', 'aria-label': def.title || def.topic });
      this.body.append(this.svg);
      this.card.dataset.markers = '0';
      this.observer = new ResizeObserver(() => this.schedule());
      this.observer.observe(this.body);
      this.schedule();
    }
    handle(msg) {
      const parsed = parsePayload(msg.text);
      if (parsed === null || typeof parsed !== 'object') return;
      const lat = asNumber(getPath(parsed, this.def.lat_field || 'lat'));
      const lon = asNumber(getPath(parsed, this.def.lon_field || 'lon'));
      if (lat == null || lon == null || Math.abs(lat) > 90 || Math.abs(lon) > 180) return;
      let label = msg.topic;
      if (this.def.label_field) {
        const l = getPath(parsed, this.def.label_field);
        if (l != null) label = String(l);
      }
      const prev = this.markers.get(msg.topic);
      const trail = prev ? prev.trail : [];
      if (!prev || prev.lat !== lat || prev.lon !== lon) trail.push([lat, lon]);
      if (trail.length > 100) trail.shift();
      this.markers.set(msg.topic, { lat, lon, label, ts: msg.ts, trail });
      this.lastTs = msg.ts;
      this.card.dataset.markers = String(this.markers.size);
      this.card.dataset.value = lat + ',' + lon;
      this.footerRight.textContent = this.markers.size + (this.markers.size === 1 ? ' marker' : ' markers');
      this.tick();
      this.schedule();
    }
    schedule() {
      if (this.pending) return;
      this.pending = true;
      requestAnimationFrame(() => { this.pending = false; this.draw(); });
    }
    draw() {
      const W = Math.max(200, this.body.clientWidth || 400);
      const H = Math.max(180, this.body.clientHeight || 220);
      const s = this.svg;
      s.setAttribute('viewBox', `0 0 ${W} ${H}`);
      s.replaceChildren();
      const list = [...this.markers.entries()];
      if (!list.length) {
        s.append(svg('text', { class: 'nodata', x: W / 2, y: H / 2, 'text-anchor': 'middle', text: 'waiting for positions' }));
        return;
      }
      // fit the markers, with a margin, keeping the aspect ratio
      let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
      for (const [, m] of list) {
        const mx = mercX(m.lon), my = mercY(m.lat);
        x0 = Math.min(x0, mx); x1 = Math.max(x1, mx); y0 = Math.min(y0, my); y1 = Math.max(y1, my);
      }
      const MIN_SPAN = 0.00005; // a few hundred metres
      let cx = (x0 + x1) / 2, cy = (y0 + y1) / 2;
      let span = Math.max(x1 - x0, (y1 - y0) * W / H, MIN_SPAN) * 1.4;
      span = Math.min(span, 1);
      const scale = W / span; // pixels per world unit
      const left = cx - W / 2 / scale, top = cy - H / 2 / scale;
      const px = (mx) => (mx - left) * scale;
      const py = (my) => (my - top) * scale;
      // tiles (when configured and reachable), under the grid
      if (this.def.tiles) {
        const z = Math.max(0, Math.min(19, Math.floor(Math.log2(scale / 256))));
        const n = Math.pow(2, z);
        const size = scale / n;
        const tx0 = Math.floor(left * n), tx1 = Math.floor((left + W / scale) * n);
        const ty0 = Math.max(0, Math.floor(top * n)), ty1 = Math.min(n - 1, Math.floor((top + H / scale) * n));
        if ((tx1 - tx0 + 1) * (ty1 - ty0 + 1) <= 64) {
          for (let tx = tx0; tx <= tx1; tx++) {
            for (let ty = ty0; ty <= ty1; ty++) {
              const wx = ((tx % n) + n) % n;
              const href = this.def.tiles.replace('{z}', z).replace('{x}', wx).replace('{y}', ty).replace('{s}', 'abc'[(tx + ty) % 3]);
              const img = svg('image', { href, x: px(tx / n).toFixed(1), y: py(ty / n).toFixed(1), width: (size + 0.5).toFixed(1), height: (size + 0.5).toFixed(1), preserveAspectRatio: 'none' });
              img.addEventListener('error', () => img.remove());
              s.append(img);
            }
          }
          if (/openstreetmap/.test(this.def.tiles)) {
            s.append(svg('text', { class: 'attribution', x: W - 4, y: H - 4, 'text-anchor': 'end', text: '© OpenStreetMap contributors' }));
          }
        }
      }
      // the longitude/latitude grid
      const lonL = left * 360 - 180, lonR = (left + W / scale) * 360 - 180;
      const latT = invY(top), latB = invY(top + H / scale);
      const want = Math.max(3, Math.floor(W / 100));
      const lonStep = DEG_STEPS.find((st) => (lonR - lonL) / st <= want) || 90;
      const latStep = DEG_STEPS.find((st) => (latT - latB) / st <= Math.max(3, Math.floor(H / 55))) || 90;
      const dec = (st) => Math.max(0, Math.ceil(-Math.log10(st)));
      for (let lon = Math.ceil(lonL / lonStep) * lonStep; lon <= lonR; lon += lonStep) {
        const xx = px(mercX(lon));
        s.append(svg('line', { class: 'graticule', x1: xx, x2: xx, y1: 0, y2: H }));
        s.append(svg('text', { class: 'graticule-label', x: xx + 3, y: H - 4, text: Math.abs(lon).toFixed(dec(lonStep)) + '°' + (lon < 0 ? 'W' : 'E') }));
      }
      for (let lat = Math.ceil(latB / latStep) * latStep; lat <= latT; lat += latStep) {
        const yy = py(mercY(lat));
        s.append(svg('line', { class: 'graticule', x1: 0, x2: W, y1: yy, y2: yy }));
        s.append(svg('text', { class: 'graticule-label', x: 3, y: yy - 3, text: Math.abs(lat).toFixed(dec(latStep)) + '°' + (lat < 0 ? 'S' : 'N') }));
      }
      for (const [, m] of list) {
        if (m.trail.length > 1) {
          const pts = m.trail.map(([la, lo]) => px(mercX(lo)).toFixed(1) + ',' + py(mercY(la)).toFixed(1)).join(' ');
          s.append(svg('polyline', { class: 'trail', points: pts }));
        }
      }
      for (const [topic, m] of list) {
        const xx = px(mercX(m.lon)), yy = py(mercY(m.lat));
        const g = svg('g', { class: 'marker', 'data-role': 'marker', 'data-topic': topic, 'data-lat': m.lat, 'data-lon': m.lon, transform: `translate(${xx.toFixed(1)},${yy.toFixed(1)})` },
          svg('title', { text: `${m.label}\n${m.lat.toFixed(5)}, ${m.lon.toFixed(5)}\n${fmtDateTime(m.ts)}` }),
          svg('circle', { class: 'halo', r: 12 }),
          svg('circle', { r: 6 }),
          svg('text', { x: 10, y: 4, text: m.label }));
        s.append(g);
      }
    }
  }

  class SwitchWidget extends Widget {
    constructor(def, key) {
      super(def, key);
      this.state = 'unknown';
      this.toggle = el('button', {
        type: 'button', class: 'toggle', role: 'switch', 'aria-checked': 'false', 'data-role': 'toggle',
        'aria-label': def.title || def.topic, onclick: () => this.click(),
      }, el('span', { class: 'knob' }));
      this.label = el('span', { class: 'switch-state', 'data-role': 'state', text: '?' });
      this.body.classList.add('switch-body');
      this.body.append(this.toggle, this.label);
      this.footerRight.textContent = '→ ' + (def.command_topic || '');
      this.show('unknown');
    }
    show(state, pending) {
      this.state = state;
      this.card.dataset.state = state;
      this.toggle.setAttribute('aria-checked', state === 'on' ? 'true' : 'false');
      this.toggle.classList.toggle('pending', !!pending);
      this.label.textContent = state === 'on' ? (this.def.on || 'ON') : state === 'off' ? (this.def.off || 'OFF') : '?';
    }
    handle(msg) {
      const parsed = parsePayload(msg.text);
      const v = extract(parsed, this.def.field);
      const on = this.def.on != null ? this.def.on : 'ON';
      const off = this.def.off != null ? this.def.off : 'OFF';
      const same = (a, b) => String(a).toLowerCase() === String(b).toLowerCase();
      let state = 'unknown';
      if (v === true || (v !== undefined && same(v, on)) || same(msg.text, on)) state = 'on';
      else if (v === false || (v !== undefined && same(v, off)) || same(msg.text, off)) state = 'off';
      this.lastTs = msg.ts;
      this.card.dataset.value = msg.text;
      this.show(state);
      this.tick();
    }
    async click() {
      const d = this.def;
      if (midge.editing || !d.command_topic) return;
      const wantOn = this.state !== 'on';
      const previous = this.state;
      this.show(wantOn ? 'on' : 'off', true);
      try {
        await api('/api/v1/publish', {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ topic: d.command_topic, payload: wantOn ? (d.on || 'ON') : (d.off || 'OFF'), qos: d.qos || 0, retain: !!d.retain }),
        });
        this.card.dataset.sent = wantOn ? 'on' : 'off';
        this.toggle.classList.remove('pending');
      } catch (e) {
        this.show(previous);
        toast('Could not switch ' + (d.title || d.topic) + ': ' + e.message);
      }
    }
  }

  const KINDS = { gauge: GaugeWidget, value: ValueWidget, chart: ChartWidget, map: MapWidget, switch: SwitchWidget };

  midge.widgetKinds = KINDS;
})();
