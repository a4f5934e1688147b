// midge page: the dashboard's widgets. Each kind is a class over Widget; the dashboard
// (dashboard.js) creates them from their definitions, calls load() (each starts from the
// last values of its topics, and a chart, map or table from the series store) and hands
// them the live messages of their topics (accepts(topic)). A widget's payload filter is
// evaluated here (see compileFilter). Tests read: [data-widget-id][data-kind] with
// data-value, data-state (switch, led), data-pending (switch), data-points, data-range,
// data-since, data-until, data-query (chart), data-markers, data-trail (map), data-rows
// (table), data-loaded once load() is done.
'use strict';
(function () {
  const { $, el, svg, setAttrs, api, toast, fmtNumber, fmtCount, fmtClock, fmtDateTime, ago, parseDuration, topicMatches, getPath, parsePayload, extract, asNumber, niceStep } = window.midge;

  const TIME_STEPS = [1e3, 2e3, 5e3, 1e4, 15e3, 3e4, 6e4, 12e4, 3e5, 6e5, 9e5, 18e5, 36e5, 72e5, 108e5, 216e5, 432e5, 864e5, 1728e5, 6048e5];


  // ---------- payload filters ----------
  // A widget's filter is a condition in the rules' expression language (what follows WHERE
  // in a rule: `type = 'door'`, `temp > 30 AND room = "k"`); the server checked it with the
  // rules crate when the dashboard was saved, and this evaluates it the way the rules crate
  // does: SQL's three-valued logic (a missing field makes a comparison unknown, and only
  // TRUE passes), numeric strings compare as numbers, `"x"` right of a comparison (or in
  // IN, LIKE) is text as in EMQX, elsewhere a field name.

  const KEYWORDS = new Set(['AND', 'OR', 'NOT', 'IN', 'BETWEEN', 'LIKE', 'IS', 'NULL', 'TRUE', 'FALSE']);

  function tokenize(src) {
    const out = [];
    let i = 0;
    const fail = (m) => { throw new Error(m + ' at ' + (i + 1)); };
    while (i < src.length) {
      const c = src[i];
      if (/\s/.test(c)) { i++; continue; }
      if (c === "'" || c === '"') {
        let j = i + 1, s = '';
        for (;;) {
          if (j >= src.length) fail('unclosed ' + c + ' quote');
          if (src[j] === c) {
            if (src[j + 1] === c) { s += c; j += 2; continue; }
            break;
          }
          s += src[j++];
        }
        out.push({ t: c === "'" ? 'str' : 'qid', v: s });
        i = j + 1;
        continue;
      }
      let m = /^(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?/.exec(src.slice(i));
      if (m) { out.push({ t: 'num', v: Number(m[0]) }); i += m[0].length; continue; }
      m = /^[A-Za-z_][A-Za-z0-9_$]*/.exec(src.slice(i));
      if (m) {
        const up = m[0].toUpperCase();
        out.push(KEYWORDS.has(up) ? { t: 'kw', v: up } : { t: 'id', v: m[0] });
        i += m[0].length;
        continue;
      }
      m = /^(?:<=|>=|<>|!=|\|\||[=<>(),.[\]+\-*/%])/.exec(src.slice(i));
      if (m) { out.push({ t: 'op', v: m[0] }); i += m[0].length; continue; }
      fail('unexpected ' + JSON.stringify(c));
    }
    return out;
  }

  function parseFilter(src) {
    const toks = tokenize(src);
    let p = 0;
    const peek = () => toks[p];
    const isOp = (v) => toks[p] && toks[p].t === 'op' && toks[p].v === v;
    const isKw = (v) => toks[p] && toks[p].t === 'kw' && toks[p].v === v;
    const expect = (t, v) => {
      const k = toks[p];
      if (!k || k.t !== t || k.v !== v) throw new Error('expected ' + v + (k ? ' before ' + JSON.stringify(k.v) : ' at the end'));
      p++;
    };
    // a bare "name" where a value is expected is text
    const asText = (e) => (e.k === 'field' && e.quoted && !e.path.length ? { k: 'lit', v: e.name } : e);
    function or() {
      let l = and();
      while (isKw('OR')) { p++; l = { k: 'or', a: l, b: and() }; }
      return l;
    }
    function and() {
      let l = not();
      while (isKw('AND')) { p++; l = { k: 'and', a: l, b: not() }; }
      return l;
    }
    function not() {
      if (isKw('NOT')) { p++; return { k: 'not', a: not() }; }
      return predicate();
    }
    function predicate() {
      const l = additive();
      const t = peek();
      if (t && t.t === 'op' && ['=', '!=', '<>', '<', '<=', '>', '>='].includes(t.v)) {
        p++;
        return { k: 'cmp', op: t.v === '<>' ? '!=' : t.v, a: l, b: asText(additive()) };
      }
      let negated = false;
      if (isKw('NOT') && toks[p + 1] && toks[p + 1].t === 'kw' && ['IN', 'BETWEEN', 'LIKE'].includes(toks[p + 1].v)) { negated = true; p++; }
      if (isKw('IN')) {
        p++;
        expect('op', '(');
        const list = [asText(or())];
        while (isOp(',')) { p++; list.push(asText(or())); }
        expect('op', ')');
        return { k: 'in', a: l, list, negated };
      }
      if (isKw('BETWEEN')) {
        p++;
        const lo = additive();
        expect('kw', 'AND');
        return { k: 'between', a: l, lo, hi: additive(), negated };
      }
      if (isKw('LIKE')) {
        p++;
        return { k: 'like', a: l, b: asText(additive()), negated };
      }
      if (negated) throw new Error('expected IN, BETWEEN or LIKE after NOT');
      if (isKw('IS')) {
        p++;
        let neg = false;
        if (isKw('NOT')) { neg = true; p++; }
        const w = peek();
        if (!w || w.t !== 'kw' || !['NULL', 'TRUE', 'FALSE'].includes(w.v)) throw new Error('expected NULL, TRUE or FALSE after IS');
        p++;
        return { k: 'is', a: l, what: w.v, negated: neg };
      }
      return l;
    }
    function additive() {
      let l = mult();
      for (;;) {
        const t = peek();
        if (t && t.t === 'op' && (t.v === '+' || t.v === '-' || t.v === '||')) { p++; l = { k: 'arith', op: t.v, a: l, b: mult() }; } else return l;
      }
    }
    function mult() {
      let l = unary();
      for (;;) {
        const t = peek();
        if (t && t.t === 'op' && (t.v === '*' || t.v === '/' || t.v === '%')) { p++; l = { k: 'arith', op: t.v, a: l, b: unary() }; } else return l;
      }
    }
    function unary() {
      if (isOp('-')) { p++; return { k: 'neg', a: unary() }; }
      if (isOp('+')) { p++; return unary(); }
      return primary();
    }
    function primary() {
      const t = peek();
      if (!t) throw new Error('unexpected end of the condition');
      if (t.t === 'num' || t.t === 'str') { p++; return { k: 'lit', v: t.v }; }
      if (t.t === 'kw' && (t.v === 'TRUE' || t.v === 'FALSE')) { p++; return { k: 'lit', v: t.v === 'TRUE' }; }
      if (t.t === 'kw' && t.v === 'NULL') { p++; return { k: 'lit', v: null }; }
      if (isOp('(')) { p++; const e = or(); expect('op', ')'); return e; }
      if (t.t === 'id' || t.t === 'qid') {
        p++;
        const f = { k: 'field', name: t.v, quoted: t.t === 'qid', path: [] };
        for (;;) {
          if (isOp('.')) {
            p++;
            const n = peek();
            if (!n || (n.t !== 'id' && n.t !== 'qid' && n.t !== 'kw')) throw new Error('expected a name after .');
            p++;
            f.path.push(String(n.v));
          } else if (isOp('[')) {
            p++;
            let neg = false;
            if (isOp('-')) { neg = true; p++; }
            const n = peek();
            if (!n || !(n.t === 'num' || (n.t === 'str' && !neg))) throw new Error('expected an index or a quoted key in [ ]');
            p++;
            f.path.push(n.t === 'num' ? (neg ? -n.v : n.v) : String(n.v));
            expect('op', ']');
          } else break;
        }
        return f;
      }
      throw new Error('unexpected ' + JSON.stringify(t.v));
    }
    const e = or();
    if (p < toks.length) throw new Error('unexpected ' + JSON.stringify(toks[p].v));
    return e;
  }

  const absent = (v) => v === null || v === undefined;
  function num(v) {
    if (typeof v === 'number') return isFinite(v) ? v : null;
    if (typeof v === 'string' && /^\s*[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?\s*$/.test(v)) return Number(v);
    return null;
  }
  function compare(a, b) {
    if (absent(a) || absent(b)) return null;
    if (typeof a === 'string' && typeof b === 'string') return a < b ? -1 : a > b ? 1 : 0;
    if (typeof a === 'boolean' && typeof b === 'boolean') return a === b ? 0 : a ? 1 : -1;
    if (typeof a === 'object' || typeof b === 'object' || typeof a === 'boolean' || typeof b === 'boolean') return null;
    const x = num(a), y = num(b);
    if (x == null || y == null) return null;
    return x < y ? -1 : x > y ? 1 : 0;
  }
  function equals(a, b) {
    if (absent(a) || absent(b)) return null;
    if (typeof a === 'object' && typeof b === 'object') return JSON.stringify(a) === JSON.stringify(b);
    return compare(a, b) === 0;
  }
  const truth = (v) => (typeof v === 'boolean' ? v : null);
  function likeRegex(pattern) {
    let re = '';
    for (const ch of pattern) re += ch === '%' ? '.*' : ch === '_' ? '.' : ch.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
    return new RegExp('^' + re + '$', 's');
  }

  // the columns of a message as the rules crate sees them
  function columns(ctx) {
    const p = ctx.parsed;
    if (p !== null && typeof p === 'object' && !Array.isArray(p)) return p;
    if (ctx.isJson) return { value: p };
    return { payload: ctx.text };
  }
  function walk(v, path) {
    for (const s of path) {
      if (typeof s === 'number') {
        if (!Array.isArray(v)) return undefined;
        v = v[s < 0 ? v.length + s : s];
      } else {
        if (v === null || typeof v !== 'object' || Array.isArray(v) || !Object.prototype.hasOwnProperty.call(v, s)) return undefined;
        v = v[s];
      }
      if (v === undefined) return undefined;
    }
    return v;
  }
  function fieldValue(f, ctx) {
    const cols = columns(ctx);
    if (f.name === 'payload' && f.path.length) return walk(cols, f.path);
    const has = Object.prototype.hasOwnProperty.call(cols, f.name);
    if (!has) {
      if (f.path.length) return undefined;
      switch (f.name) {
        case 'topic': return ctx.topic;
        case 'qos': return ctx.qos;
        case 'retain': return ctx.retain;
        case 'timestamp': return ctx.ts;
        case 'payload': return ctx.text;
        default: return undefined;
      }
    }
    return walk(cols[f.name], f.path);
  }
  function evaluate(e, ctx) {
    switch (e.k) {
      case 'lit': return e.v;
      case 'field': return fieldValue(e, ctx);
      case 'or': {
        const a = truth(evaluate(e.a, ctx)), b = truth(evaluate(e.b, ctx));
        return a === true || b === true ? true : a === false && b === false ? false : null;
      }
      case 'and': {
        const a = truth(evaluate(e.a, ctx)), b = truth(evaluate(e.b, ctx));
        return a === false || b === false ? false : a === true && b === true ? true : null;
      }
      case 'not': { const a = truth(evaluate(e.a, ctx)); return a == null ? null : !a; }
      case 'cmp': {
        const a = evaluate(e.a, ctx), b = evaluate(e.b, ctx);
        if (e.op === '=') return equals(a, b);
        if (e.op === '!=') { const r = equals(a, b); return r == null ? null : !r; }
        const c = compare(a, b);
        if (c == null) return null;
        return e.op === '<' ? c < 0 : e.op === '<=' ? c <= 0 : e.op === '>' ? c > 0 : c >= 0;
      }
      case 'in': {
        const a = evaluate(e.a, ctx);
        if (absent(a)) return null;
        let unknown = false;
        for (const x of e.list) {
          const r = equals(a, evaluate(x, ctx));
          if (r === true) return !e.negated;
          if (r == null) unknown = true;
        }
        return unknown ? null : e.negated;
      }
      case 'between': {
        const a = evaluate(e.a, ctx);
        const lo = compare(a, evaluate(e.lo, ctx)), hi = compare(a, evaluate(e.hi, ctx));
        const x = lo == null ? null : lo >= 0, y = hi == null ? null : hi <= 0;
        const r = x === false || y === false ? false : x === true && y === true ? true : null;
        return r == null ? null : r !== e.negated;
      }
      case 'like': {
        const a = evaluate(e.a, ctx), b = evaluate(e.b, ctx);
        if (absent(a) || absent(b)) return null;
        const text = typeof a === 'string' ? a : typeof a === 'number' ? String(a) : null;
        if (text == null || typeof b !== 'string') return null;
        return likeRegex(b).test(text) !== e.negated;
      }
      case 'is': {
        const a = evaluate(e.a, ctx);
        const r = e.what === 'NULL' ? absent(a) : a === (e.what === 'TRUE');
        return r !== e.negated;
      }
      case 'neg': { const a = num(evaluate(e.a, ctx)); return a == null ? null : -a; }
      case 'arith': {
        const a = evaluate(e.a, ctx), b = evaluate(e.b, ctx);
        if (absent(a) || absent(b)) return null;
        if (e.op === '||') return (typeof a === 'object' ? JSON.stringify(a) : String(a)) + (typeof b === 'object' ? JSON.stringify(b) : String(b));
        const x = num(a), y = num(b);
        if (x == null || y == null) return null;
        if ((e.op === '/' || e.op === '%') && y === 0) return null;
        return e.op === '+' ? x + y : e.op === '-' ? x - y : e.op === '*' ? x * y : e.op === '/' ? x / y : x % y;
      }
    }
    return null;
  }

  // A filter as a function of a message ({topic, text, ts, qos, retain}) → whether it passes;
  // throws with a readable message when the text does not parse.
  function compileFilter(src) {
    if (src == null || String(src).trim() === '') return () => true;
    const ast = parseFilter(String(src));
    return (msg, parsed, isJson) => evaluate(ast, { ...msg, parsed, isJson }) === true;
  }

  // ---------- where widgets start from ----------

  const PALETTE = ['#0f9488', '#2563eb', '#d97706', '#db2777', '#7c3aed', '#16a34a', '#dc2626', '#0891b2'];

  // GET /api/v1/last for a filter, shared by the widgets that ask at about the same time
  const lastAsked = new Map();
  function lastValues(filter) {
    const hit = lastAsked.get(filter);
    if (hit && Date.now() - hit.at < 3000) return hit.promise;
    const promise = api('/api/v1/last?topic=' + encodeURIComponent(filter)).then(
      (r) => (r.topics || []).filter((e) => e.payload != null).map((e) => ({
        topic: e.topic,
        text: e.encoding === 'base64' ? atob(e.payload) : e.payload,
        ts: e.ts,
        qos: e.qos,
        retain: e.retain,
        last: true,
      })),
      () => []);
    lastAsked.set(filter, { at: Date.now(), promise });
    return promise;
  }

  // stored rows of a table as messages, oldest first (null when there is no store or table)
  async function storedMessages(table, topic, limit) {
    const q = new URLSearchParams({ topic, limit: String(limit) }); // newest first
    try {
      const r = await api('/api/v1/tables/' + encodeURIComponent(table || 'telemetry') + '/rows?' + q);
      return r.rows.map((row) => ({ topic: row.topic, text: JSON.stringify(row.data), ts: row.ts, stored: true })).reverse();
    } catch (_) {
      return null;
    }
  }

  function parseMessage(text) {
    try { return { parsed: JSON.parse(text), isJson: true }; } catch (_) { return { parsed: text, isJson: false }; }
  }

  // a colour set through the CSSOM (the page's CSP refuses style attributes)
  function paint(e, prop, color) { if (color) e.style.setProperty(prop, color); return e; }

  const show = (v) => (v === undefined ? '' : typeof v === 'object' && v !== null ? JSON.stringify(v) : String(v));

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
        el('header', null,
          el('h3', { text: title, title: title }),
          def.filter ? el('span', { class: 'filter-badge', 'data-role': 'filter', title: 'Only messages where ' + def.filter, text: 'where ' + def.filter }) : null,
          el('span', { class: 'topic', text: def.topic, title: def.topic }),
          this.controls),
        this.body,
        el('footer', null, this.footerLeft, this.footerRight));
      this.lastTs = null;
      this.seen = new Map(); // topic → {ts, text} of the newest message taken
      try {
        this.passes = compileFilter(def.filter);
      } catch (e) {
        this.passes = () => false;
        this.card.dataset.filterError = e.message;
        this.footerLeft.textContent = 'filter: ' + e.message;
      }
    }
    // the topic filters it reads
    topics() { return widgetTopics(this.def); }
    accepts(topic) { return this.topics().some((f) => topicMatches(f, topic)); }
    // a message of one of its topics (live, last value or stored): older than one already
    // taken of that topic, the same one again, or one the filter refuses is ignored
    handle(msg) {
      const seen = this.seen.get(msg.topic);
      if (seen && msg.ts === seen.ts && msg.text === seen.text) return false;
      // a widget showing one value keeps the newest; one with history sorts them in
      if (seen && msg.ts < seen.ts && !this.keepsHistory) return false;
      const { parsed, isJson } = parseMessage(msg.text);
      if (!this.passes(msg, parsed, isJson)) return false;
      if (!seen || msg.ts >= seen.ts) this.seen.set(msg.topic, { ts: msg.ts, text: msg.text });
      this.take(msg, parsed);
      return true;
    }
    take(msg, parsed) {
      const value = extract(parsed, this.def.field);
      if (value === undefined) return;
      this.lastTs = msg.ts;
      this.card.dataset.value = show(value);
      this.update(value, msg, parsed);
      this.tick();
    }
    tick() {
      if (this.lastTs != null) {
        this.footerLeft.textContent = 'updated ' + fmtDateTime(this.lastTs);
        this.footerLeft.title = ago(this.lastTs);
      }
    }
    update() {}
    // what it shows right away: the last value of each of its topics
    async load() {
      await this.loadLast();
      // a filtered widget on a topic carrying other messages too: the last one of the topic
      // may not be its own; the newest stored one that passes then
      if (this.lastTs == null && this.def.filter) {
        const stored = await storedMessages(this.def.table, this.def.topic, 100);
        if (stored) for (const m of stored) this.handle(m);
      }
      this.card.dataset.loaded = '1';
    }
    async loadLast() {
      const lists = await Promise.all(this.topics().map(lastValues));
      const all = lists.flat().sort((a, b) => a.ts - b.ts);
      for (const m of all) if (this.accepts(m.topic)) this.handle(m);
    }
    destroy() { if (this.observer) this.observer.disconnect(); clearTimeout(this.timer); }
  }

  function widgetTopics(def) {
    const out = [def.topic];
    for (const s of def.series || []) if (s.topic && !out.includes(s.topic)) out.push(s.topic);
    return out.filter(Boolean);
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
        this.big.textContent = show(value);
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


  // on/off from a field: on when the value is one of on_values (as text, any case)
  const DEFAULT_ON = ['true', '1', 'on', 'open'];
  function isOnValue(value, onValues) {
    const list = (onValues && onValues.length ? onValues : DEFAULT_ON).map((v) => String(v).toLowerCase());
    return list.includes(show(value).toLowerCase());
  }

  class LedWidget extends Widget {
    constructor(def, key) {
      super(def, key);
      this.lamp = el('span', { class: 'lamp', 'data-role': 'lamp', 'aria-hidden': 'true' });
      this.label = el('span', { class: 'led-state unknown', 'data-role': 'state', text: 'unknown' });
      this.body.classList.add('led-body');
      this.body.append(this.lamp, this.label);
      this.card.dataset.state = 'unknown';
      if (def.on_color) this.card.style.setProperty('--led-on', def.on_color);
      if (def.off_color) this.card.style.setProperty('--led-off', def.off_color);
    }
    update(value) {
      const on = isOnValue(value, this.def.on_values);
      this.card.dataset.state = on ? 'on' : 'off';
      this.label.classList.remove('unknown');
      this.label.textContent = on ? (this.def.on_label || 'ON') : (this.def.off_label || 'OFF');
      this.label.title = 'value: ' + show(value);
    }
  }

  class SwitchWidget extends Widget {
    constructor(def, key) {
      super(def, key);
      this.state = 'unknown';
      this.wanted = null;
      this.toggle = el('button', {
        type: 'button', class: 'toggle', role: 'switch', 'aria-checked': 'false', 'data-role': 'toggle',
        'aria-label': def.title || def.topic, onclick: () => this.click(),
      }, el('span', { class: 'knob' }));
      this.label = el('span', { class: 'switch-state', 'data-role': 'state' });
      this.body.classList.add('switch-body');
      this.body.append(this.toggle, this.label);
      this.footerRight.textContent = '→ ' + (def.command_topic || '');
      this.footerRight.title = 'commands go to ' + (def.command_topic || '') + (def.optimistic ? ' (shown at once)' : ' (shown when the device confirms)');
      this.show('unknown');
    }
    name(state) {
      return state === 'on' ? (this.def.on_label || 'ON') : state === 'off' ? (this.def.off_label || 'OFF') : 'unknown';
    }
    show(state) {
      this.state = state;
      this.card.dataset.state = state;
      this.card.dataset.pending = this.wanted || '';
      this.toggle.setAttribute('aria-checked', state === 'on' ? 'true' : 'false');
      this.toggle.classList.toggle('pending', !!this.wanted);
      this.toggle.classList.toggle('unknown', state === 'unknown');
      this.label.classList.toggle('unknown', state === 'unknown' && !this.wanted);
      this.label.textContent = this.wanted ? this.name(this.wanted) + '…' : this.name(state);
      this.label.title = this.wanted ? 'sent ' + this.name(this.wanted) + ', waiting for the device to confirm (now ' + this.name(state) + ')' : '';
    }
    // the state a value means: on, off, or unknown
    stateOf(value) {
      const on = this.def.on != null ? this.def.on : 'ON';
      const off = this.def.off != null ? this.def.off : 'OFF';
      const same = (a, b) => show(a).toLowerCase() === String(b).toLowerCase();
      if (value === true || same(value, on)) return 'on';
      if (value === false || same(value, off)) return 'off';
      return 'unknown';
    }
    take(msg, parsed) {
      const value = extract(parsed, this.def.field);
      if (value === undefined) return;
      const state = this.stateOf(value);
      this.lastTs = msg.ts;
      this.card.dataset.value = show(value);
      // the device's answer (a live message after the command) ends the wait, whatever it says
      if (this.wanted && !msg.last && !msg.stored && msg.ts >= this.sentAt - 2000) {
        if (state !== this.wanted) toast((this.def.title || this.def.topic) + ' reports ' + this.name(state) + ', not ' + this.name(this.wanted));
        this.wanted = null;
        clearTimeout(this.timer);
      }
      this.show(state);
      this.tick();
    }
    async click() {
      const d = this.def;
      if (midge.editing || !d.command_topic) return;
      const want = (this.wanted || this.state) === 'on' ? 'off' : 'on';
      try {
        await api('/api/v1/publish', {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ topic: d.command_topic, payload: want === 'on' ? (d.on || 'ON') : (d.off || 'OFF'), qos: d.qos || 0, retain: !!d.retain }),
        });
      } catch (e) {
        toast('Could not switch ' + (d.title || d.topic) + ': ' + e.message);
        return;
      }
      this.card.dataset.sent = want;
      clearTimeout(this.timer);
      if (d.optimistic) {
        this.wanted = null;
        this.show(want);
        return;
      }
      this.wanted = want;
      this.sentAt = Date.now();
      this.show(this.state);
      this.timer = setTimeout(() => {
        if (!this.wanted) return;
        toast((d.title || d.topic) + ': no confirmation of ' + this.name(this.wanted) + ' from the device on ' + d.topic);
        this.wanted = null;
        this.show(this.state);
      }, 15000);
    }
  }

  class TableWidget extends Widget {
    constructor(def, key) {
      super(def, key);
      this.max = Math.min(200, Math.max(1, def.rows || 10));
      this.msgs = []; // newest first: {topic, ts, data}
      this.head = el('thead');
      this.tbody = el('tbody');
      this.body.classList.add('table-body');
      this.body.append(el('div', { class: 'table-scroll' }, el('table', { class: 'table compact', 'data-role': 'table' }, this.head, this.tbody)));
      this.card.dataset.rows = '0';
      this.draw();
    }
    async load() {
      const stored = await storedMessages(this.def.table, this.def.topic, this.def.filter ? Math.min(1000, this.max * 10) : this.max);
      if (stored) for (const m of stored) this.handle(m);
      await this.loadLast();
      this.card.dataset.loaded = '1';
    }
    take(msg, parsed) {
      const data = parsed !== null && typeof parsed === 'object' && !Array.isArray(parsed) ? parsed : { value: parsed };
      const row = { topic: msg.topic, ts: msg.ts, data };
      // in time order, whatever the order they come in
      let i = 0;
      while (i < this.msgs.length && this.msgs[i].ts > row.ts) i++;
      const dup = this.msgs.some((r) => r.ts === row.ts && r.topic === row.topic && JSON.stringify(r.data) === JSON.stringify(data));
      if (dup) return;
      this.msgs.splice(i, 0, row);
      if (this.msgs.length > this.max) this.msgs.length = this.max;
      if (this.lastTs == null || msg.ts > this.lastTs) this.lastTs = msg.ts;
      this.card.dataset.value = JSON.stringify(this.msgs[0].data);
      this.draw();
      this.tick();
    }
    columns() {
      if (this.def.columns && this.def.columns.length) return this.def.columns;
      const seen = [];
      for (const r of this.msgs) for (const k of Object.keys(r.data)) if (!seen.includes(k) && seen.length < 8) seen.push(k);
      return seen.length ? seen : ['value'];
    }
    draw() {
      const cols = this.columns();
      const wild = /[+#]/.test(this.def.topic);
      this.head.replaceChildren(el('tr', null, el('th', { text: 'Time' }), wild ? el('th', { text: 'Topic' }) : null, ...cols.map((c) => el('th', { text: c }))));
      this.tbody.replaceChildren(...this.msgs.map((r) => el('tr', { 'data-ts': r.ts },
        el('td', { class: 'time', text: fmtDateTime(r.ts) }),
        wild ? el('td', { class: 'mono', text: r.topic }) : null,
        ...cols.map((c) => { const v = getPath(r.data, c); return el('td', { class: typeof v === 'number' ? 'num' : '', text: v === undefined ? '' : show(typeof v === 'number' ? Number(fmtNumber(v, this.def.decimals)) : v) }); }))));
      if (!this.msgs.length) this.tbody.append(el('tr', null, el('td', { class: 'muted', colspan: cols.length + 1 + (wild ? 1 : 0), text: 'waiting for messages' })));
      this.card.dataset.rows = String(this.msgs.length);
    }
  }

  const RANGES = [['1h', 36e5, 'last hour'], ['6h', 216e5, 'last 6 h'], ['24h', 864e5, 'last 24 h'], ['7d', 6048e5, 'last 7 days']];

  // datetime-local text ↔ ms
  function localInput(ts) {
    const d = new Date(ts - new Date(ts).getTimezoneOffset() * 6e4);
    return d.toISOString().slice(0, 16);
  }

  class ChartWidget extends Widget {
    constructor(def, key) {
      super(def, key);
      this.keepsHistory = true;
      const defs = def.series && def.series.length ? def.series : [{ field: def.field || 'value' }];
      this.lines = defs.map((s, i) => ({
        topic: s.topic || def.topic,
        field: s.field || 'value',
        label: s.label || (s.topic && s.topic !== def.topic ? s.topic + ' ' : '') + (s.field || 'value'),
        color: s.color || (defs.length > 1 ? PALETTE[i % PALETTE.length] : null), // one line: the theme's accent
        hist: [],   // [{ts, v, min, max, n}] from the store
        live: [],   // [[ts, v]] since
        histEnd: 0,
        last: null, // {ts, v}: the last reading
      }));
      // the range: a preset, the widget's own window, or custom from/to
      const own = parseDuration(def.window) || 36e5;
      this.ranges = RANGES.slice();
      if (!this.ranges.some((r) => r[1] === own)) this.ranges.unshift([def.window, own, 'last ' + def.window]);
      this.range = this.ranges.find((r) => r[1] === own)[0];
      this.custom = null;
      this.zoom = null;
      this.note = '';
      this.seq = 0;

      this.rangeSelect = el('select', { 'data-role': 'range', 'aria-label': 'Time range', onchange: () => this.pickRange() },
        ...this.ranges.map((r) => el('option', { value: r[0], text: r[2] })),
        el('option', { value: 'custom', text: 'custom…' }));
      this.rangeSelect.value = this.range;
      this.fromInput = el('input', { type: 'datetime-local', 'data-role': 'from', 'aria-label': 'From' });
      this.toInput = el('input', { type: 'datetime-local', 'data-role': 'to', 'aria-label': 'To' });
      this.customBox = el('span', { class: 'custom-range', hidden: true },
        this.fromInput, el('span', { text: '–' }), this.toInput,
        el('button', { type: 'button', 'data-role': 'apply', text: 'Show', onclick: () => this.applyCustom() }));
      this.resetButton = el('button', { type: 'button', 'data-role': 'reset-zoom', hidden: true, title: 'Back to the whole range', text: 'Reset zoom', onclick: () => this.resetZoom() });
      this.legend = el('div', { class: 'legend', 'data-role': 'legend', hidden: this.lines.length < 2 });
      this.current = el('span', { class: 'current', 'data-role': 'value' });
      this.footerRight.append(this.current);
      this.svg = svg('svg', { 'data-role': 'chart', role: 'img', 'aria-label': def.title || def.topic });
      this.plot = el('div', { class: 'plot' }, this.svg);
      this.body.append(el('div', { class: 'chart-tools' }, this.rangeSelect, this.customBox, this.resetButton, el('span', { class: 'hint', text: 'drag to zoom' })), this.legend, this.plot);
      this.card.dataset.points = '0';
      this.card.dataset.range = this.range;
      this.observer = new ResizeObserver(() => this.schedule());
      this.observer.observe(this.plot);
      this.dragging();
      this.drawLegend();
    }

    // the time span shown: [from, to] and whether it follows now
    view() {
      if (this.zoom) return { from: this.zoom.from, to: this.zoom.to, live: false };
      if (this.range === 'custom' && this.custom) return { from: this.custom.from, to: this.custom.to, live: false };
      const r = this.ranges.find((x) => x[0] === this.range) || this.ranges[0];
      const now = Date.now();
      return { from: now - r[1], to: now, live: true };
    }
    pickRange() {
      const v = this.rangeSelect.value;
      if (v === 'custom') {
        const cur = this.view();
        if (!this.fromInput.value) this.fromInput.value = localInput(cur.from);
        if (!this.toInput.value) this.toInput.value = localInput(cur.to);
        this.customBox.hidden = false;
        return;
      }
      this.customBox.hidden = true;
      this.range = v;
      this.custom = null;
      this.zoom = null;
      this.resetButton.hidden = true;
      this.loadHistory();
    }
    applyCustom() {
      const from = new Date(this.fromInput.value).getTime(), to = new Date(this.toInput.value).getTime();
      if (!(from < to)) { toast('Custom range: "from" must be before "to"'); return; }
      this.range = 'custom';
      this.custom = { from, to };
      this.zoom = null;
      this.resetButton.hidden = true;
      this.loadHistory();
    }
    resetZoom() {
      this.zoom = null;
      this.resetButton.hidden = true;
      this.loadHistory();
    }

    async load() {
      await Promise.all([this.loadLast(), this.loadHistory()]);
      // no last values (off, or forgotten): the newest stored reading
      await Promise.all(this.lines.filter((l) => !l.last).map(async (l) => {
        const stored = await storedMessages(this.def.table, l.topic, this.def.filter ? 50 : 1);
        if (stored) for (const m of stored) this.handle(m);
      }));
      this.card.dataset.loaded = '1';
    }

    plotWidth() { return Math.max(200, this.plot.clientWidth || 400) - 56; }

    async loadHistory() {
      const seq = ++this.seq;
      const v = this.view();
      const points = Math.max(20, Math.min(1500, Math.round(this.plotWidth())));
      const d = this.def;
      const table = d.table || 'telemetry';
      this.card.dataset.range = this.zoom ? 'zoom' : this.range;
      this.card.dataset.since = String(Math.round(v.from));
      this.card.dataset.until = v.live ? '' : String(Math.round(v.to));
      this.card.dataset.loading = '1';
      const asked = Date.now();
      let note = '';
      const results = await Promise.all(this.lines.map(async (line, i) => {
        try {
          if (d.filter) {
            // the store cannot apply the filter: rows, filtered and bucketed here
            const q = new URLSearchParams({ topic: line.topic, since: String(Math.round(v.from)), limit: '5000' });
            if (!v.live) q.set('until', String(Math.round(v.to)));
            const url = '/api/v1/tables/' + encodeURIComponent(table) + '/rows?' + q;
            if (i === 0) this.card.dataset.query = url;
            const r = await api(url);
            if (r.truncated) note = 'newest ' + r.rows.length + ' rows';
            const vals = [];
            for (const row of r.rows) {
              const m = { topic: row.topic, text: JSON.stringify(row.data), ts: row.ts };
              if (!this.passes(m, row.data, true)) continue;
              const n = asNumber(extract(row.data, line.field));
              if (n != null) vals.push([row.ts, n]);
            }
            return bucket(vals.reverse(), v.from, v.to, points);
          }
          const q = new URLSearchParams({ field: line.field, topic: line.topic, since: String(Math.round(v.from)), points: String(points), agg: 'avg' });
          if (!v.live) q.set('until', String(Math.round(v.to)));
          const url = '/api/v1/tables/' + encodeURIComponent(table) + '/series?' + q;
          if (i === 0) this.card.dataset.query = url;
          const r = await api(url);
          if (i === 0) this.card.dataset.bucket = String(r.bucket_ms);
          if (r.truncated) note = 'older points left out';
          const end = v.live ? asked : v.to;
          return r.points.map((p) => ({ ts: Math.max(v.from, Math.min(end, p.ts + (r.bucket_ms || 0) / 2)), v: p.value, min: p.min, max: p.max, n: p.count }));
        } catch (e) {
          note = e.status === 404 ? 'no table ' + table + ' yet' : e.status === 503 ? 'no history (no series store)' : 'history: ' + e.message;
          return [];
        }
      }));
      if (seq !== this.seq) return; // a newer range was asked for meanwhile
      this.lines.forEach((line, i) => {
        line.hist = results[i].filter((p) => p.v != null);
        line.histEnd = v.live ? asked : v.to;
        line.live = line.live.filter((p) => p[0] > line.histEnd);
      });
      const any = this.lines.some((l) => l.hist.length);
      const maxes = this.lines.flatMap((l) => l.hist.map((p) => (p.max != null ? p.max : p.v)));
      this.card.dataset.max = maxes.length ? String(Math.max(...maxes)) : '';
      this.note = note || (any ? '' : 'no stored history in this range');
      this.card.dataset.loading = '';
      this.schedule();
    }

    take(msg, parsed) {
      let took = false;
      for (const line of this.lines) {
        if (!topicMatches(line.topic, msg.topic)) continue;
        const n = asNumber(extract(parsed, line.field));
        if (n == null) continue;
        took = true;
        if (!line.last || msg.ts >= line.last.ts) line.last = { ts: msg.ts, v: n };
        if (msg.ts > line.histEnd && !line.live.some((p) => p[0] === msg.ts)) {
          line.live.push([msg.ts, n]);
          line.live.sort((a, b) => a[0] - b[0]);
          if (line.live.length > 5000) line.live.splice(0, line.live.length - 5000);
        }
      }
      if (!took) return;
      if (this.lastTs == null || msg.ts > this.lastTs) this.lastTs = msg.ts;
      const first = this.lines[0].last;
      if (first) {
        this.current.textContent = fmtNumber(first.v, this.def.decimals) + (this.def.unit ? ' ' + this.def.unit : '');
        this.card.dataset.value = String(first.v);
      }
      this.drawLegend();
      this.tick();
      this.schedule();
    }

    drawLegend() {
      if (this.lines.length < 2) return;
      this.legend.replaceChildren(...this.lines.map((l, i) => el('span', { class: 'item', 'data-series': i },
        paint(el('span', { class: 'swatch' }), 'background', l.color),
        el('span', { text: l.label }),
        el('b', { text: l.last ? fmtNumber(l.last.v, this.def.decimals) + (this.def.unit ? ' ' + this.def.unit : '') : '–' }))));
    }

    dragging() {
      let start = null, rect = null;
      const xOf = (e) => {
        const b = this.svg.getBoundingClientRect();
        const vb = this.svg.viewBox.baseVal;
        return (e.clientX - b.left) * ((vb && vb.width) || b.width) / (b.width || 1);
      };
      this.svg.addEventListener('pointerdown', (e) => {
        if (e.button !== 0 || midge.editing || !this.geom) return;
        start = xOf(e);
        try { this.svg.setPointerCapture(e.pointerId); } catch (_) { /* a synthetic event */ }
        rect = svg('rect', { class: 'selection', x: start, y: this.geom.top, width: 0, height: this.geom.height });
        this.svg.append(rect);
      });
      this.svg.addEventListener('pointermove', (e) => {
        if (start == null || !rect) return;
        const x = xOf(e);
        rect.setAttribute('x', Math.min(start, x));
        rect.setAttribute('width', Math.abs(x - start));
      });
      const end = (e) => {
        if (start == null) return;
        const x = xOf(e);
        const a = Math.min(start, x), b = Math.max(start, x);
        start = null;
        if (rect) rect.remove();
        rect = null;
        if (b - a < 5 || !this.geom) return;
        this.zoomTo(this.geom.tAt(a), this.geom.tAt(b));
      };
      this.svg.addEventListener('pointerup', end);
      this.svg.addEventListener('pointercancel', () => { start = null; if (rect) rect.remove(); rect = null; });
    }
    // show [from, to] only (what a drag selects)
    zoomTo(from, to) {
      if (!(to - from >= 1000)) return;
      this.zoom = { from: Math.round(from), to: Math.round(to) };
      this.resetButton.hidden = false;
      this.loadHistory();
    }

    schedule() {
      if (this.pending) return;
      this.pending = true;
      requestAnimationFrame(() => { this.pending = false; this.draw(); });
    }
    draw() {
      const W = Math.max(200, this.plot.clientWidth || 400);
      const H = Math.max(150, this.plot.clientHeight || 180);
      const s = this.svg;
      s.setAttribute('viewBox', `0 0 ${W} ${H}`);
      s.replaceChildren();
      const v = this.view();
      const t0 = v.from, t1 = v.to, span = Math.max(1, t1 - t0);
      const inView = (ts) => ts >= t0 && ts <= t1;
      const data = this.lines.map((l) => ({
        line: l,
        hist: l.hist.filter((p) => inView(p.ts)),
        live: v.live ? l.live.filter((p) => inView(p[0])) : [],
      }));
      const total = data.reduce((n, d) => n + d.hist.length + d.live.length, 0);
      this.card.dataset.points = String(total);
      const pad = { l: 48, r: 12, t: 10, b: 22 };
      const pw = W - pad.l - pad.r, ph = H - pad.t - pad.b;
      let lo = this.def.min, hi = this.def.max;
      if (lo == null || hi == null) {
        let mn = Infinity, mx = -Infinity;
        for (const d of data) {
          for (const p of d.hist) { mn = Math.min(mn, p.min != null ? p.min : p.v); mx = Math.max(mx, p.max != null ? p.max : p.v); }
          for (const p of d.live) { mn = Math.min(mn, p[1]); mx = Math.max(mx, p[1]); }
        }
        if (!isFinite(mn)) { mn = 0; mx = 1; }
        if (mn === mx) { mn -= 1; mx += 1; }
        const m = (mx - mn) * 0.08;
        if (lo == null) lo = mn - m;
        if (hi == null) hi = mx + m;
      }
      if (!(hi > lo)) hi = lo + 1;
      const step = niceStep(hi - lo, Math.max(3, Math.min(6, Math.floor(ph / 40))));
      const x = (t) => pad.l + (t - t0) / span * pw;
      const y = (val) => pad.t + (1 - (val - lo) / (hi - lo)) * ph;
      this.geom = { top: pad.t, height: ph, tAt: (px) => t0 + Math.min(1, Math.max(0, (px - pad.l) / pw)) * span };
      for (let val = Math.ceil(lo / step) * step; val <= hi + 1e-9; val += step) {
        const yy = y(val);
        s.append(svg('line', { class: 'gridline', x1: pad.l, x2: W - pad.r, y1: yy, y2: yy }));
        s.append(svg('text', { class: 'tick', x: pad.l - 6, y: yy + 4, 'text-anchor': 'end', text: fmtNumber(Number(val.toPrecision(6))) }));
      }
      const tstep = TIME_STEPS.find((st) => span / st <= Math.max(2, Math.floor(pw / 90))) || 6048e5;
      const offset = new Date().getTimezoneOffset() * 6e4;
      for (let t = Math.ceil((t0 - offset) / tstep) * tstep + offset; t <= t1; t += tstep) {
        const xx = x(t);
        s.append(svg('line', { class: 'gridline', x1: xx, x2: xx, y1: pad.t, y2: H - pad.b }));
        const label = tstep >= 864e5 ? new Date(t).toLocaleDateString([], { month: 'short', day: 'numeric' }) : fmtClock(t, tstep < 6e4);
        if (xx > pad.l + 24 && xx < W - pad.r - 24) s.append(svg('text', { class: 'tick', x: xx, y: H - 6, 'text-anchor': 'middle', text: label }));
      }
      s.append(svg('line', { class: 'axis', x1: pad.l, x2: W - pad.r, y1: H - pad.b, y2: H - pad.b }));
      if (!total) {
        s.append(svg('text', { class: 'nodata', x: pad.l + pw / 2, y: pad.t + ph / 2, 'text-anchor': 'middle', text: this.card.dataset.loading ? 'loading…' : this.note || 'waiting for data' }));
        return;
      }
      const cy = (val) => Math.min(H - pad.b, Math.max(pad.t, y(val))).toFixed(1);
      const cx = (t) => Math.min(W - pad.r, Math.max(pad.l, x(t))).toFixed(1);
      data.forEach((d, i) => {
        const color = d.line.color;
        // the min/max envelope of each bucket: spikes stay visible whatever the zoom
        const banded = d.hist.filter((p) => p.n > 1 && p.min != null && p.max != null && p.max > p.min);
        if (banded.length) {
          const up = d.hist.map((p) => cx(p.ts) + ',' + cy(p.max != null ? p.max : p.v));
          const down = d.hist.slice().reverse().map((p) => cx(p.ts) + ',' + cy(p.min != null ? p.min : p.v));
          s.append(paint(paint(svg('polygon', { class: 'band', 'data-role': 'band', points: up.concat(down).join(' ') }), 'fill', color), 'stroke', color));
        }
        const pts = d.hist.map((p) => [p.ts, p.v]).concat(d.live);
        if (!pts.length) return;
        const coords = pts.map((p) => cx(p[0]) + ',' + cy(p[1]));
        if (data.length === 1) {
          s.append(paint(svg('path', { class: 'area', d: `M ${cx(pts[0][0])},${H - pad.b} L ${coords.join(' L ')} L ${cx(pts[pts.length - 1][0])},${H - pad.b} Z` }), 'fill', color));
        }
        s.append(paint(svg('polyline', { class: 'line', 'data-role': i === 0 ? 'line' : 'line-' + i, 'data-series': i, points: coords.join(' ') }), 'stroke', color));
        const last = pts[pts.length - 1];
        s.append(paint(svg('circle', { class: 'last', cx: cx(last[0]), cy: cy(last[1]), r: 3.5 }), 'fill', color));
      });
      if (this.note) s.append(svg('text', { class: 'tick', x: W - pad.r, y: pad.t + 10, 'text-anchor': 'end', text: this.note }));
    }
    tick() {
      super.tick();
      this.schedule();
    }
  }

  // [ts, v] (oldest first) into n buckets over [from, to]: {ts, v (mean), min, max, n}
  function bucket(vals, from, to, n) {
    const width = Math.max(1, (to - from) / n);
    const out = new Map();
    for (const [ts, v] of vals) {
      const k = Math.floor((ts - from) / width);
      const b = out.get(k);
      if (!b) out.set(k, { ts: from + (k + 0.5) * width, sum: v, min: v, max: v, n: 1 });
      else { b.sum += v; b.n += 1; if (v < b.min) b.min = v; if (v > b.max) b.max = v; }
    }
    return [...out.values()].map((b) => ({ ts: b.ts, v: b.sum / b.n, min: b.min, max: b.max, n: b.n }));
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
      this.keepsHistory = true;
      this.markers = new Map();
      this.svg = svg('svg', { 'data-role': 'map', role: 'img', 'aria-label': def.title || def.topic });
      this.body.append(this.svg);
      this.card.dataset.markers = '0';
      this.observer = new ResizeObserver(() => this.schedule());
      this.observer.observe(this.body);
      this.schedule();
    }
    // the recent track of each topic from the store (when it has one), then the last values
    async load() {
      const stored = await storedMessages(this.def.table, this.def.topic, 500);
      if (stored) {
        this.card.dataset.history = String(stored.length);
        for (const m of stored) this.handle(m);
      }
      await this.loadLast();
      this.card.dataset.loaded = '1';
    }
    take(msg, parsed) {
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
      // in time order, whichever comes first (live, stored or last value)
      if (!trail.some((p) => p[2] === msg.ts)) {
        let i = trail.length;
        while (i > 0 && trail[i - 1][2] > msg.ts) i--;
        const before = trail[i - 1];
        if (!before || before[0] !== lat || before[1] !== lon) trail.splice(i, 0, [lat, lon, msg.ts]);
        if (trail.length > 500) trail.shift();
      }
      if (!prev || msg.ts >= prev.ts) this.markers.set(msg.topic, { lat, lon, label, ts: msg.ts, trail });
      if (this.lastTs == null || msg.ts > this.lastTs) this.lastTs = msg.ts;
      const newest = [...this.markers.values()].reduce((a, b) => (b.ts > a.ts ? b : a));
      this.card.dataset.markers = String(this.markers.size);
      this.card.dataset.value = newest.lat + ',' + newest.lon;
      this.card.dataset.trail = String([...this.markers.values()].reduce((n, mk) => n + mk.trail.length, 0));
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
        for (const [la, lo] of m.trail.concat([[m.lat, m.lon]])) {
          const mx = mercX(lo), my = mercY(la);
          x0 = Math.min(x0, mx); x1 = Math.max(x1, mx); y0 = Math.min(y0, my); y1 = Math.max(y1, my);
        }
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
          xx > W - 110 ? svg('text', { x: -10, y: 4, 'text-anchor': 'end', text: m.label }) : svg('text', { x: 10, y: 4, text: m.label }));
        s.append(g);
      }
    }
  }


  // ---------- the widget form (#widget-form) ----------
  // dashboard.js opens and submits it; these fill it from a definition and read one back.

  const FORM_TEXT = ['field', 'unit', 'table', 'window', 'bucket', 'lat_field', 'lon_field', 'label_field', 'tiles', 'command_topic', 'on', 'off', 'filter', 'on_label', 'off_label', 'on_color', 'off_color'];
  const FORM_NUM = ['min', 'max', 'decimals', 'rows'];
  const FORM_LIST = ['on_values', 'columns'];
  const FORM_CHECK = ['retain', 'optimistic'];

  function relevant(form, name, kind) {
    const input = form.elements[name];
    if (!input) return false;
    const label = input.closest('[data-kinds]');
    return !label || label.dataset.kinds.split(' ').includes(kind);
  }

  // chart series as text: one per line, `field`, `field @ topic`, then ` as Label`
  function seriesText(list) {
    return (list || []).map((s) => (s.field || 'value') + (s.topic ? ' @ ' + s.topic : '') + (s.label ? ' as ' + s.label : '') + (s.color ? ' ' + s.color : '')).join('\n');
  }
  function parseSeries(text) {
    const out = [];
    for (const raw of String(text).split('\n')) {
      const line = raw.trim();
      if (!line) continue;
      const m = /^(\S+)(?:\s*@\s*(\S+))?(?:\s+as\s+(.+?))?(?:\s+(#[0-9a-fA-F]{3,8}))?$/i.exec(line);
      if (!m) throw new Error('series: cannot read ' + JSON.stringify(line) + ' (write field, field @ topic, then "as Label")');
      const s = { field: m[1] };
      if (m[2]) s.topic = m[2];
      if (m[3]) s.label = m[3];
      if (m[4]) s.color = m[4];
      out.push(s);
    }
    return out;
  }

  function fillForm(form, def) {
    for (const input of form.elements) {
      const name = input.name;
      if (!name) continue;
      const v = def[name];
      if (name === 'series') input.value = seriesText(v);
      else if (FORM_LIST.includes(name)) input.value = (v || []).join(', ');
      else if (input.type === 'checkbox') input.checked = !!v;
      else if (v != null) input.value = String(v);
    }
  }

  // the widget the form describes (throws with a readable message)
  function readForm(form, keep) {
    const f = form.elements;
    const kind = f.kind.value;
    const w = { kind, topic: f.topic.value.trim() };
    if (keep && keep.id) w.id = keep.id;
    const title = f.title.value.trim();
    if (title) w.title = title;
    w.width = Number(f.width.value) || 1;
    for (const n of FORM_TEXT) if (relevant(form, n, kind)) { const v = f[n].value.trim(); if (v !== '') w[n] = v; }
    for (const n of FORM_NUM) if (relevant(form, n, kind)) { const v = f[n].value.trim(); if (v !== '') w[n] = Number(v); }
    for (const n of FORM_LIST) if (relevant(form, n, kind)) { const v = f[n].value.split(',').map((x) => x.trim()).filter(Boolean); if (v.length) w[n] = v; }
    for (const n of FORM_CHECK) if (relevant(form, n, kind) && f[n].checked) w[n] = true;
    if (relevant(form, 'qos', kind)) w.qos = Number(f.qos.value) || 0;
    if (relevant(form, 'series', kind)) { const s = parseSeries(f.series.value); if (s.length) w.series = s; }
    if (w.filter) compileFilter(w.filter); // the page must read it too (the server checks it on Save)
    return w;
  }

  const KINDS = { gauge: GaugeWidget, value: ValueWidget, chart: ChartWidget, map: MapWidget, switch: SwitchWidget, led: LedWidget, table: TableWidget };

  midge.widgetKinds = KINDS;
  midge.widgetTopics = widgetTopics;
  midge.compileFilter = compileFilter;
  midge.widgetForm = { fill: fillForm, read: readForm };
})();
