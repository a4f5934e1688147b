// midge page: shared helpers and the tab registry. Plain JavaScript, no framework, nothing
// loaded from elsewhere. Every other script of the page takes what it needs from
// window.midge and registers its tab with midge.tab(name, {show, poll}).
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


  // ---------- tabs ----------
  // Each tab is a button.tab[data-tab=NAME] in the header and a section#view-NAME. A module
  // registers {show(), poll()}: show when the tab is opened, poll every 2 s while it is open.
  const tabs = new Map();
  function tab(name, handlers) { tabs.set(name, handlers || {}); }

  window.midge = { $, el, svg, setAttrs, api, toast, fmtNumber, fmtCount, fmtClock, fmtDateTime, ago, parseDuration, topicMatches, getPath, parsePayload, extract, asNumber, niceStep, tab, tabs };
})();
