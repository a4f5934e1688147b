// midge dashboard: plain JavaScript, no framework, nothing loaded from elsewhere.
//
// Widgets come from /api/v1/dashboard; live values from one EventSource on /api/v1/live
// subscribed to the union of the widgets' topics; chart history from the series API.
// Elements that tests read carry ids or data attributes: each widget is
// [data-widget-id][data-kind] with data-value (last value), charts data-points, switches
// data-state, map markers [data-role=marker][data-topic]; body[data-live] and
// body[data-ready] tell the live stream's state and that the first load is done.
'use strict';
(function () {
  const SVG_NS = 'http://www.w3.org/2000/svg';
  const $ = (id) => document.getElementById(id);

  // ---------- small helpers ----------

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    setAttrs(e, attrs);
    for (const c of children) if (c != null) e.append(c);
    return e;
  }

  function svg(tag, attrs, ...children) {
    const e = document.createElementNS(SVG_NS, tag);
    setAttrs(e, attrs);
    for (const c of children) if (c != null) e.append(c);
    return e;
  }

  function setAttrs(e, attrs) {
    if (!attrs) return;
    for (const [k, v] of Object.entries(attrs)) {
      if (v == null || v === false) continue;
      if (k === 'text') e.textContent = v;
      else if (k === 'class') e.setAttribute('class', v);
      else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v === true ? '' : String(v));
    }
  }

  async function api(path, options) {
    const response = await fetch(path, options);
    let body = null;
    try { body = await response.json(); } catch (_) { /* not JSON */ }
    if (!response.ok) {
      const message = body && body.error ? body.error : response.status + ' ' + response.statusText;
      const err = new Error(message);
      err.status = response.status;
      throw err;
    }
    return body;
  }

  function toast(text) {
    const t = $('toast');
    t.textContent = text;
    t.hidden = false;
    clearTimeout(toast.timer);
    toast.timer = setTimeout(() => { t.hidden = true; }, 5000);
  }

  function fmtNumber(v, decimals) {
    if (typeof v !== 'number' || !isFinite(v)) return String(v);
    if (decimals != null) return v.toFixed(decimals);
    const abs = Math.abs(v);
    const d = abs >= 1000 ? 0 : abs >= 100 ? 1 : 2;
    return String(Number(v.toFixed(d)));
  }

  function fmtCount(n) {
    if (n == null) return '–';
    if (n >= 1e6) return (n / 1e6).toFixed(1) + 'M';
    if (n >= 1e4) return (n / 1e3).toFixed(1) + 'k';
    return String(n);
  }

  function fmtClock(ts, seconds) {
    const o = { hour: '2-digit', minute: '2-digit' };
    if (seconds) o.second = '2-digit';
    return new Date(ts).toLocaleTimeString([], o);
  }

  function fmtDateTime(ts) {
    const d = new Date(ts);
    const today = new Date();
    const sameDay = d.toDateString() === today.toDateString();
    return sameDay ? fmtClock(ts, true) : d.toLocaleDateString([], { month: 'short', day: 'numeric' }) + ' ' + fmtClock(ts, true);
  }

  function ago(ts) {
    const s = Math.max(0, Math.round((Date.now() - ts) / 1000));
    if (s < 5) return 'just now';
    if (s < 60) return s + ' s ago';
    if (s < 3600) return Math.floor(s / 60) + ' min ago';
    if (s < 86400) return Math.floor(s / 3600) + ' h ago';
    return Math.floor(s / 86400) + ' d ago';
  }

  // durations like the server's: 60000, 90s, 15m, 1h30m, 7d
  function parseDuration(s) {
    if (s == null) return null;
    s = String(s).trim();
    if (/^\d+$/.test(s)) return Number(s);
    const units = { ms: 1, s: 1e3, m: 6e4, min: 6e4, h: 36e5, d: 864e5, w: 6048e5 };
    let total = 0;
    const re = /(\d+(?:\.\d+)?)([a-z]+)/gy;
    let m;
    let consumed = 0;
    while ((m = re.exec(s)) !== null) {
      if (!(m[2] in units)) return null;
      total += Number(m[1]) * units[m[2]];
      consumed = re.lastIndex;
    }
    return consumed === s.length && s.length > 0 ? Math.round(total) : null;
  }

  // an MQTT topic filter against a topic name
  function topicMatches(filter, topic) {
    if (filter.startsWith('$share/')) return false;
    const f = filter.split('/');
    const t = topic.split('/');
    if (topic.startsWith('$') && (f[0] === '#' || f[0] === '+')) return false;
    for (let i = 0; i < f.length; i++) {
      if (f[i] === '#') return true;
      if (i >= t.length) return false;
      if (f[i] !== '+' && f[i] !== t[i]) return false;
    }
    return f.length === t.length;
  }

  // a JSON path (temp, env.temp, values[0]) in a parsed payload
  function getPath(obj, path) {
    let cur = obj;
    for (const part of String(path).split('.')) {
      const m = /^([^[\]]+)((?:\[\d+\])*)$/.exec(part);
      if (!m) return undefined;
      if (cur == null || typeof cur !== 'object') return undefined;
      cur = cur[m[1]];
      const idx = m[2].match(/\d+/g) || [];
      for (const i of idx) {
        if (!Array.isArray(cur)) return undefined;
        cur = cur[Number(i)];
      }
    }
    return cur;
  }

  function parsePayload(text) {
    try { return JSON.parse(text); } catch (_) { return text; }
  }

  // The value a widget shows: a field of a JSON object, or a plain payload itself.
  function extract(parsed, field) {
    if (parsed !== null && typeof parsed === 'object') {
      return getPath(parsed, field || 'value');
    }
    return parsed;
  }

  function asNumber(v) {
    if (typeof v === 'number' && isFinite(v)) return v;
    if (typeof v === 'string' && v.trim() !== '' && isFinite(Number(v))) return Number(v);
    if (typeof v === 'boolean') return v ? 1 : 0;
    return null;
  }

  // nice round steps for axes
  function niceStep(range, count) {
    if (!(range > 0)) return 1;
    const raw = range / count;
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const n = raw / mag;
    return (n <= 1 ? 1 : n <= 2 ? 2 : n <= 2.5 ? 2.5 : n <= 5 ? 5 : 10) * mag;
  }

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
      if (state.editing || !d.command_topic) return;
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

  // ---------- the dashboard ----------

  const state = {
    saved: [],       // widgets as the server has them
    draft: null,     // widgets being edited (edit mode)
    editing: false,
    views: [],       // Widget instances on screen
    source: null,    // the EventSource
    filters: '',
    retry: null,
    formIndex: null, // the widget the form edits (null: a new one)
    latest: new Map(), // the last message of each topic, replayed into re-drawn widgets
  };
  const LATEST_MAX = 1000;

  function dispatch(msg) {
    for (const v of state.views) {
      if (topicMatches(v.def.topic, msg.topic)) {
        try { v.handle(msg); } catch (err) { console.error('widget', v.key, err); }
      }
    }
  }

  function shown() { return state.editing ? state.draft : state.saved; }

  function render() {
    const list = shown();
    for (const v of state.views) v.destroy();
    const grid = $('grid');
    grid.replaceChildren();
    state.views = list.map((def, i) => {
      const Kind = KINDS[def.kind] || ValueWidget;
      const view = new Kind(def, def.id || 'new-' + (i + 1));
      if (state.editing) addControls(view, i);
      grid.append(view.card);
      return view;
    });
    // what is already known (retained states, last readings) at once
    for (const msg of state.latest.values()) dispatch(msg);
    $('empty').hidden = list.length > 0;
    connectLive();
    return Promise.allSettled(state.views.map((v) => v.load()));
  }

  function addControls(view, i) {
    const c = view.controls;
    const list = state.draft;
    const move = (d) => () => {
      const j = i + d;
      if (j < 0 || j >= list.length) return;
      [list[i], list[j]] = [list[j], list[i]];
      render();
    };
    c.append(
      el('button', { type: 'button', title: 'Move left', 'data-action': 'left', onclick: move(-1), text: '◀' }),
      el('button', { type: 'button', title: 'Move right', 'data-action': 'right', onclick: move(1), text: '▶' }),
      el('button', { type: 'button', title: 'Edit', 'data-action': 'edit', onclick: () => openForm(i), text: '✎' }),
      el('button', { type: 'button', title: 'Remove', class: 'danger', 'data-action': 'remove', onclick: () => { list.splice(i, 1); closeForm(); render(); }, text: '✕' }));
  }

  function connectLive() {
    const filters = [...new Set(shown().map((w) => w.topic).filter(Boolean))];
    const key = filters.join('\n');
    if (key === state.filters && state.source && state.source.readyState !== EventSource.CLOSED) return;
    if (state.source) state.source.close();
    clearTimeout(state.retry);
    state.source = null;
    state.filters = key;
    if (!filters.length) { setLive('idle'); return; }
    const url = '/api/v1/live?' + filters.map((f) => 'filter=' + encodeURIComponent(f)).join('&');
    const source = new EventSource(url);
    state.source = source;
    setLive('connecting');
    source.onopen = () => setLive('open');
    source.onerror = () => {
      if (source.readyState === EventSource.CLOSED) {
        // refused (a 4xx/5xx): try again later
        setLive('error');
        state.filters = '';
        state.retry = setTimeout(connectLive, 5000);
      } else {
        setLive('connecting');
      }
    };
    source.onmessage = (e) => {
      let m;
      try { m = JSON.parse(e.data); } catch (_) { return; }
      if (m.dropped) {
        // the server skipped messages this page could not take fast enough
        $('live-status').title = m.dropped + ' messages skipped: this page could not keep up';
        $('live-status').dataset.dropped = String(m.dropped);
      }
      const text = m.encoding === 'base64' ? atob(m.payload) : m.payload;
      const msg = { topic: m.topic, text, ts: m.ts || Date.now(), retain: m.retain, qos: m.qos };
      state.latest.delete(msg.topic);
      state.latest.set(msg.topic, msg);
      if (state.latest.size > LATEST_MAX) state.latest.delete(state.latest.keys().next().value);
      dispatch(msg);
    };
  }

  function setLive(s) {
    document.body.dataset.live = s;
    $('live-text').textContent = { open: 'live', connecting: 'connecting…', error: 'offline', idle: 'idle' }[s] || s;
  }

  async function loadDashboard() {
    try {
      const d = await api('/api/v1/dashboard');
      state.saved = d.widgets || [];
      $('dash-note').textContent = d.persistent ? '' : 'edits last until the server restarts (no dashboard_file)';
    } catch (e) {
      state.saved = [];
      $('dash-note').textContent = 'could not load the dashboard: ' + e.message;
    }
    await render();
    document.body.dataset.ready = '1';
  }

  // ---------- edit mode ----------

  function setEditing(on) {
    state.editing = on;
    document.body.classList.toggle('editing', on);
    state.draft = on ? JSON.parse(JSON.stringify(state.saved)) : null;
    $('edit-message').hidden = true;
    if (!on) closeForm();
    render();
  }

  const form = $('widget-form');

  function openForm(index) {
    state.formIndex = index;
    const def = index == null ? { kind: 'gauge' } : state.draft[index];
    form.reset();
    for (const input of form.elements) {
      if (!input.name) continue;
      const v = def[input.name];
      if (input.type === 'checkbox') input.checked = !!v;
      else if (v != null) input.value = String(v);
    }
    if (index == null) {
      form.elements.width.value = '1';
      form.elements.qos.value = '0';
    }
    $('form-title').textContent = index == null ? 'Add a widget' : 'Edit widget';
    $('form-submit').textContent = index == null ? 'Add' : 'Update';
    showKindFields();
    form.hidden = false;
    form.elements.title.focus();
  }

  function closeForm() { form.hidden = true; state.formIndex = null; }

  function showKindFields() {
    const kind = form.elements.kind.value;
    for (const label of form.querySelectorAll('[data-kinds]')) {
      label.hidden = !label.dataset.kinds.split(' ').includes(kind);
    }
  }

  function formWidget() {
    const f = form.elements;
    const kind = f.kind.value;
    const w = { kind, topic: f.topic.value.trim() };
    const keep = state.formIndex != null ? state.draft[state.formIndex] : null;
    if (keep && keep.id) w.id = keep.id;
    const text = (name) => { const v = f[name].value.trim(); if (v !== '') w[name] = v; };
    const num = (name) => { const v = f[name].value.trim(); if (v !== '') w[name] = Number(v); };
    text('title');
    w.width = Number(f.width.value) || 1;
    const relevant = (name) => { const l = f[name].closest('label'); return !l.dataset.kinds || l.dataset.kinds.split(' ').includes(kind); };
    for (const n of ['field', 'unit', 'table', 'window', 'bucket', 'lat_field', 'lon_field', 'label_field', 'tiles', 'command_topic', 'on', 'off']) if (relevant(n)) text(n);
    for (const n of ['min', 'max', 'decimals']) if (relevant(n)) num(n);
    if (relevant('qos')) w.qos = Number(f.qos.value) || 0;
    if (relevant('retain')) w.retain = f.retain.checked;
    return w;
  }

  form.elements.kind.addEventListener('change', showKindFields);
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const w = formWidget();
    if (!w.topic) { toast('A topic filter is needed'); return; }
    if (state.formIndex == null) state.draft.push(w);
    else state.draft[state.formIndex] = w;
    closeForm();
    render();
  });
  $('form-cancel').addEventListener('click', closeForm);
  $('edit-toggle').addEventListener('click', () => setEditing(true));
  $('edit-cancel').addEventListener('click', () => setEditing(false));
  $('edit-add').addEventListener('click', () => openForm(null));
  $('edit-save').addEventListener('click', async () => {
    const box = $('edit-message');
    try {
      const d = await api('/api/v1/dashboard', {
        method: 'PUT',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ widgets: state.draft }),
      });
      state.saved = d.widgets;
      setEditing(false);
      toast(d.persistent ? 'Dashboard saved' : 'Dashboard updated (not saved to a file)');
    } catch (e) {
      box.textContent = e.message;
      box.hidden = false;
    }
  });

  // ---------- header stats ----------

  let lastStats = null;
  async function pollStats() {
    try {
      const s = await api('/api/v1/stats');
      // the user's clients and retained messages: midge's own and $SYS apart
      $('stat-clients').textContent = fmtCount(s.clients_user ?? s.clients_connected);
      $('stat-subs').textContent = fmtCount(s.subscriptions);
      $('stat-retained').textContent = fmtCount(s.retained_user ?? s.retained);
      if (lastStats) {
        const dt = (s.time - lastStats.time) / 1000;
        if (dt > 0) {
          const rin = (s.messages_received - lastStats.messages_received) / dt;
          const rout = (s.messages_sent - lastStats.messages_sent) / dt;
          $('stat-rate-in').textContent = fmtNumber(Math.max(0, rin), rin < 10 ? 1 : 0);
          $('stat-rate-out').textContent = fmtNumber(Math.max(0, rout), rout < 10 ? 1 : 0);
        }
      }
      lastStats = s;
      $('stats').dataset.ok = '1';
    } catch (e) {
      $('stats').dataset.ok = '0';
      if (e.status === 403) readOnly();
    }
  }

  // A share link's visitor may see the dashboard only: no tabs, figures or editing that
  // would answer 403.
  function readOnly() {
    document.body.dataset.readonly = '1';
    for (const id of ['tab-data', 'tab-rules', 'edit-toggle', 'stats']) {
      const node = $(id);
      if (node) node.hidden = true;
    }
  }

  // ---------- rules ----------
  //
  // Each row is tr[data-rule=NAME][data-source=config|api] with data-matched/-passed/-failed;
  // API rules have button[data-action=delete-rule] (two clicks: "Delete", then "Delete?"),
  // config rules a [data-role=config] badge. The form #rule-form POSTs /api/v1/rules; what
  // the server refuses is listed in #rule-problems-list, one li[data-role=problem] each, and
  // the form's data-state says sending, added, refused or error.

  const rules = {
    list: [],
    seq: 0,              // answers of older requests are ignored
    confirming: null,    // the rule whose delete button waits for a second click
    confirmTimer: null,
    deleting: new Set(),
    added: null,         // highlighted for a moment after it was added
  };
  const ruleForm = $('rule-form');

  async function loadRules() {
    const seq = ++rules.seq;
    try {
      const r = await api('/api/v1/rules');
      if (seq !== rules.seq) return;
      rules.list = r.rules;
      renderRules();
      $('rules-note').textContent = 'updated ' + fmtClock(Date.now(), true);
    } catch (e) {
      if (seq === rules.seq) $('rules-note').textContent = e.message;
    }
  }

  function renderRules() {
    $('rules-table').querySelector('tbody').replaceChildren(...rules.list.map(ruleRow));
    $('rules-empty').hidden = rules.list.length > 0;
  }

  function ruleRow(x) {
    let source;
    if (x.source === 'api') {
      const confirming = rules.confirming === x.name;
      source = el('button', {
        type: 'button',
        class: 'danger' + (confirming ? ' confirm' : ''),
        'data-action': 'delete-rule',
        title: confirming ? 'Click again to delete ' + x.name : 'Added through the API; delete it (its stored rows stay)',
        text: confirming ? 'Delete?' : 'Delete',
        disabled: rules.deleting.has(x.name),
        onclick: () => deleteRule(x.name),
      });
    } else {
      source = el('span', {
        class: 'badge',
        'data-role': 'config',
        title: 'From the configuration file: change or remove it there ([[rule]])',
        text: 'config file',
      });
    }
    return el('tr', {
      'data-rule': x.name,
      'data-source': x.source,
      'data-matched': x.matched,
      'data-passed': x.passed,
      'data-failed': x.failed,
      class: rules.added === x.name ? 'just-added' : null,
    },
      el('td', null, el('b', { text: x.name }), el('div', { class: 'muted', text: x.filters.join(', ') })),
      el('td', null, el('code', { text: x.sql })),
      el('td', { text: x.actions.join('; ') }),
      el('td', { class: 'num', 'data-role': 'matched', text: fmtCount(x.matched) }),
      el('td', { class: 'num', 'data-role': 'passed', text: fmtCount(x.passed) }),
      el('td', { class: 'num', 'data-role': 'failed', text: fmtCount(x.failed) }),
      el('td', { class: x.last_error ? 'err' : 'muted', 'data-role': 'last-error', text: x.last_error || '—' }),
      el('td', { class: 'source' }, source));
  }

  async function deleteRule(name) {
    clearTimeout(rules.confirmTimer);
    if (rules.confirming !== name) {
      rules.confirming = name;
      rules.confirmTimer = setTimeout(() => { rules.confirming = null; renderRules(); }, 4000);
      renderRules();
      return;
    }
    rules.confirming = null;
    rules.deleting.add(name);
    renderRules();
    try {
      await api('/api/v1/rules/' + encodeURIComponent(name), { method: 'DELETE' });
      toast('Rule ' + name + ' deleted (its stored rows stay)');
    } catch (e) {
      toast('Could not delete ' + name + ': ' + e.message);
    }
    rules.deleting.delete(name);
    await loadRules();
  }

  function showProblems(problems, title) {
    const box = $('rule-problems');
    $('rule-problems-title').textContent = title || '';
    $('rule-problems-list').replaceChildren(...problems.map((p) => el('li', { 'data-role': 'problem', text: p })));
    box.hidden = problems.length === 0;
  }

  // The form as the API's rule JSON, and what is wrong before asking the server.
  function ruleSpec() {
    const spec = { name: $('rule-name').value.trim(), sql: $('rule-sql').value.trim() };
    const local = [];
    const store = $('rule-store').value.trim();
    if (store) spec.store = store;
    const topic = $('rule-republish-topic').value.trim();
    const payload = $('rule-republish-payload').value;
    if (topic) {
      spec.republish = { topic, qos: Number($('rule-republish-qos').value) || 0, retain: $('rule-republish-retain').checked };
      if (payload !== '') spec.republish.payload = payload;
    } else if (payload !== '') {
      local.push('republish: a payload needs a topic to republish to');
    }
    const url = $('rule-webhook-url').value.trim();
    if (url) spec.webhook = { url };
    return [spec, local];
  }

  function openRuleForm() {
    ruleForm.hidden = false;
    $('rule-name').focus();
  }

  function closeRuleForm() {
    ruleForm.hidden = true;
    showProblems([]);
  }

  ruleForm.addEventListener('submit', async (e) => {
    e.preventDefault();
    const [spec, local] = ruleSpec();
    if (local.length) {
      showProblems(local, 'Fix this first:');
      ruleForm.dataset.state = 'refused';
      return;
    }
    const button = $('rule-submit');
    button.disabled = true;
    ruleForm.dataset.state = 'sending';
    try {
      const response = await fetch('/api/v1/rules', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(spec),
      });
      let body = null;
      try { body = await response.json(); } catch (_) { /* not JSON */ }
      if (response.ok) {
        rules.added = spec.name;
        setTimeout(() => { if (rules.added === spec.name) { rules.added = null; renderRules(); } }, 5000);
        ruleForm.reset();
        closeRuleForm();
        ruleForm.dataset.state = 'added';
        toast('Rule ' + spec.name + ' added: it runs from now on');
        await loadRules();
      } else {
        const problems = body && Array.isArray(body.problems) && body.problems.length
          ? body.problems
          : [body && body.error ? body.error : response.status + ' ' + response.statusText];
        showProblems(problems, problems.length > 1 ? 'The server refused the rule (' + problems.length + ' problems):' : 'The server refused the rule:');
        ruleForm.dataset.state = 'refused';
      }
    } catch (err) {
      showProblems([String(err && err.message ? err.message : err)], 'Could not reach the server:');
      ruleForm.dataset.state = 'error';
    } finally {
      button.disabled = false;
    }
  });
  $('rule-new').addEventListener('click', () => (ruleForm.hidden ? openRuleForm() : $('rule-name').focus()));
  $('rule-cancel').addEventListener('click', closeRuleForm);
  $('rule-sql').addEventListener('keydown', (e) => {
    // Ctrl/Cmd+Enter adds the rule from the SQL box
    if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) { e.preventDefault(); ruleForm.requestSubmit(); }
  });

  // ---------- data browser ----------

  const data = { table: null, topic: '' };

  async function loadTables() {
    const ul = $('data-tables');
    try {
      const r = await api('/api/v1/tables');
      $('data-note').textContent = '';
      if (!r.tables.length) {
        ul.replaceChildren(el('li', { class: 'none', text: 'no tables yet' }));
        return;
      }
      ul.replaceChildren(...r.tables.map((t) => el('li', {
        'data-table': t.name, class: t.name === data.table ? 'active' : '',
        onclick: () => { data.table = t.name; data.topic = ''; $('data-topic').value = ''; loadTables(); loadTopics(); loadRows(); },
      }, el('span', { class: 'name', text: t.name }), el('span', { class: 'count', text: fmtCount(t.rows) }))));
      if (!data.table && r.tables.length) {
        data.table = r.tables[0].name;
        ul.firstChild.classList.add('active');
        loadTopics();
        loadRows();
      }
    } catch (e) {
      ul.replaceChildren();
      $('data-note').textContent = e.message;
    }
  }

  async function loadTopics() {
    const ul = $('data-topics');
    $('data-table-name').textContent = data.table || '';
    if (!data.table) { ul.replaceChildren(); return; }
    try {
      const r = await api('/api/v1/tables/' + encodeURIComponent(data.table) + '/topics');
      ul.replaceChildren(...r.topics.map((t) => el('li', {
        'data-topic': t.topic, class: t.topic === data.topic ? 'active' : '', title: 'last ' + fmtDateTime(t.last_ts),
        onclick: () => { data.topic = t.topic; $('data-topic').value = t.topic; loadTopics(); loadRows(); },
      }, el('span', { class: 'name', text: t.topic }), el('span', { class: 'count', text: fmtCount(t.rows) }))));
    } catch (e) {
      ul.replaceChildren(el('li', { class: 'none', text: e.message }));
    }
  }

  async function loadRows() {
    const body = $('data-rows').querySelector('tbody');
    if (!data.table) { body.replaceChildren(); return; }
    const q = new URLSearchParams({ limit: '200' });
    const topic = $('data-topic').value.trim();
    if (topic) q.set('topic', topic);
    const since = $('data-since').value;
    if (since) q.set('since', since);
    try {
      const r = await api('/api/v1/tables/' + encodeURIComponent(data.table) + '/rows?' + q);
      if (!r.rows.length) {
        body.replaceChildren(el('tr', null, el('td', { colspan: 4, class: 'muted', text: 'no rows' })));
        return;
      }
      body.replaceChildren(...r.rows.map((row) => {
        const json = JSON.stringify(row.data);
        return el('tr', { 'data-row': row.id },
          el('td', { class: 'mono', text: fmtDateTime(row.ts), title: new Date(row.ts).toISOString() }),
          el('td', { class: 'mono', text: row.topic }),
          el('td', { class: 'mono', text: row.client_id || '—' }),
          el('td', { class: 'data', text: json, title: json }));
      }));
      $('data-note').textContent = r.rows.length + ' rows (newest first)';
    } catch (e) {
      body.replaceChildren(el('tr', null, el('td', { colspan: 4, class: 'err', text: e.message })));
    }
  }

  $('data-refresh').addEventListener('click', () => { data.topic = $('data-topic').value.trim(); loadTopics(); loadRows(); });
  $('data-since').addEventListener('change', loadRows);
  $('data-topic').addEventListener('keydown', (e) => { if (e.key === 'Enter') { data.topic = e.target.value.trim(); loadRows(); } });

  // ---------- tabs and timers ----------

  function showTab(tab) {
    document.body.dataset.tab = tab;
    for (const b of document.querySelectorAll('.tab')) b.classList.toggle('active', b.dataset.tab === tab);
    for (const v of ['dashboard', 'data', 'rules']) $('view-' + v).hidden = v !== tab;
    if (tab === 'rules') loadRules();
    if (tab === 'data') loadTables();
    if (tab === 'dashboard') for (const v of state.views) if (v.schedule) v.schedule();
    if (location.hash !== '#' + tab) history.replaceState(null, '', tab === 'dashboard' ? location.pathname : '#' + tab);
  }
  for (const b of document.querySelectorAll('.tab')) b.addEventListener('click', () => showTab(b.dataset.tab));

  setInterval(() => {
    if (document.hidden) return;
    pollStats();
    if (document.body.dataset.tab === 'rules') loadRules();
  }, 2000);
  setInterval(() => { for (const v of state.views) v.tick(); }, 10000);

  pollStats();
  const first = location.hash.replace('#', '');
  showTab(['data', 'rules'].includes(first) ? first : 'dashboard');
  loadDashboard();
})();
