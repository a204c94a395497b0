// onceflow web UI: polls the processor's JSON API (same origin) and draws
// the job graph, the checkpoint history and the sink's transactions.
// Every value from the API reaches the page through textContent or an SVG
// attribute, never as markup.
'use strict';

(function () {
  const SVG = 'http://www.w3.org/2000/svg';
  const params = new URLSearchParams(location.search);
  // ?refresh=<ms> sets the poll interval (default 1 s, at least 200 ms).
  const refresh = Math.max(200, parseInt(params.get('refresh') || '1000', 10) || 1000);

  const $ = (id) => document.getElementById(id);
  const state = {
    polls: 0,
    lastOperators: [], // the graph of the last attempt seen (kept between attempts)
    pending: [], // recent pending-transaction counts, for the sparkline
  };

  // ---------- formatting ----------
  const nf = new Intl.NumberFormat('en-US');
  function fmtInt(n) { return n == null ? '–' : nf.format(Math.round(n)); }
  function fmtRate(r) {
    if (r == null) return '';
    if (r >= 100) return nf.format(Math.round(r)) + '/s';
    return r.toFixed(r >= 10 ? 0 : 1) + '/s';
  }
  function fmtBytes(b) {
    if (b == null) return '–';
    const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0;
    while (b >= 1024 && i < u.length - 1) { b /= 1024; i++; }
    return (i === 0 ? b : b.toFixed(b >= 10 ? 0 : 1)) + ' ' + u[i];
  }
  function fmtMs(ms) {
    if (ms == null) return '–';
    if (ms < 1000) return Math.round(ms) + ' ms';
    if (ms < 60000) return (ms / 1000).toFixed(ms < 10000 ? 2 : 1) + ' s';
    return (ms / 60000).toFixed(1) + ' min';
  }
  function fmtSeconds(s) { return s == null ? '–' : fmtMs(s * 1000); }
  function fmtTime(t) {
    if (!t) return '–';
    const d = new Date(t);
    return isNaN(d) || d.getFullYear() < 1971 ? '–' : d.toLocaleTimeString('en-GB');
  }

  // ---------- DOM helpers ----------
  function el(tag, attrs, text) {
    const e = document.createElementNS(SVG, tag);
    for (const k in attrs || {}) e.setAttribute(k, attrs[k]);
    if (text != null) e.textContent = text;
    return e;
  }
  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); }
  function setText(id, text) { $(id).textContent = text; }
  function td(text, cls) {
    const c = document.createElement('td');
    c.textContent = text;
    if (cls) c.className = cls;
    return c;
  }

  // ---------- polling ----------
  async function getJSON(path) {
    const resp = await fetch(path, { cache: 'no-store', headers: { Accept: 'application/json' } });
    let body = null;
    try { body = await resp.json(); } catch (e) { /* not JSON */ }
    return { status: resp.status, body: body };
  }

  async function poll() {
    try {
      const [job, cps] = await Promise.all([getJSON('/api/v1/job'), getJSON('/api/v1/checkpoints')]);
      if (job.status !== 200 || !job.body) throw new Error('GET /api/v1/job answered ' + job.status);
      render(job.body, cps);
      state.polls++;
      document.body.dataset.polls = String(state.polls);
      setText('poll-status', 'updated ' + new Date().toLocaleTimeString('en-GB') + ' · every ' + fmtMs(refresh));
    } catch (e) {
      setText('poll-status', 'API unreachable: ' + e.message);
      document.body.dataset.error = e.message;
    } finally {
      setTimeout(poll, refresh);
    }
  }

  function render(job, cps) {
    const distributed = job.mode === 'distributed';
    setText('job-name', job.name || '');
    const badge = $('job-state');
    badge.textContent = job.state;
    badge.className = 'badge ' + job.state;
    setText('job-mode', distributed ? 'distributed · consumer group ' + job.consumer_group : 'single');
    document.title = 'onceflow · ' + (job.name || '');
    if (distributed) renderDistributed(job); else renderSingle(job);
    renderCheckpoints(cps, distributed);
  }

  // ---------- single mode ----------
  function renderSingle(job) {
    $('groups-panel').hidden = true;
    $('graph-panel').hidden = false;
    $('card-sink').hidden = false;
    $('card-source').hidden = false;

    setText('restarts', fmtInt(job.restarts));
    if (job.last_failure) {
      setText('last-failure-time', 'last failure at ' + fmtTime(job.last_failure.time));
      setText('last-failure', job.last_failure.error);
    } else {
      setText('last-failure-time', 'no failure');
      setText('last-failure', '');
    }

    const sink = job.sink || {};
    setText('txn-pending', fmtInt(sink.pending_transactions));
    setText('txn-oldest', sink.pending_transactions ? fmtSeconds(sink.oldest_pending_seconds) : 'none pending');
    state.pending.push(sink.pending_transactions || 0);
    if (state.pending.length > 120) state.pending.shift();
    drawSpark($('txn-spark'), state.pending);

    const src = job.source || {};
    setText('src-read', fmtInt(src.records_read));
    setText('src-lag', src.consumer_lag == null ? 'unknown' : fmtInt(src.consumer_lag));
    setText('src-dlq', fmtInt(src.dead_lettered));
    const cl = job.cluster || {};
    setText('cluster', cl.reachable === false
      ? 'Kafka unreachable for ' + fmtSeconds(cl.unreachable_seconds) + ': ' + (cl.last_error || '')
      : 'Kafka reachable');

    let ops = job.operators || [];
    const note = $('graph-empty');
    if (ops.length === 0) {
      ops = state.lastOperators;
      note.hidden = false;
      note.textContent = ops.length
        ? 'No attempt is running (' + job.state + '): the graph of the last attempt, counters frozen.'
        : 'No attempt is running (' + job.state + '): the graph shows once one runs.';
    } else {
      note.hidden = true;
      state.lastOperators = ops;
    }
    drawGraph($('graph'), ops);
  }

  // depth is the longest path from a source, for the graph's columns.
  function depths(ops) {
    const byUID = new Map(ops.map((o) => [o.uid, o]));
    const memo = new Map();
    function depth(uid, seen) {
      if (memo.has(uid)) return memo.get(uid);
      const o = byUID.get(uid);
      if (!o || seen.has(uid)) return 0;
      seen.add(uid);
      let d = 0;
      for (const i of o.inputs || []) if (byUID.has(i)) d = Math.max(d, depth(i, seen) + 1);
      memo.set(uid, d);
      return d;
    }
    for (const o of ops) depth(o.uid, new Set());
    return memo;
  }

  function activity(o) {
    if (o.backpressured) return 'backpressured';
    if (o.idle) return 'idle';
    return 'busy';
  }

  function drawGraph(svg, ops) {
    clear(svg);
    const H = 104, GY = 22, PAD = 10;
    const d = depths(ops);
    const cols = [];
    for (const o of ops) {
      const c = d.get(o.uid) || 0;
      (cols[c] = cols[c] || []).push(o);
    }
    // Boxes of 210 px 70 apart, narrowed (down to 168 px, 44 apart) to
    // fit the panel; a longer graph scrolls.
    const avail = (svg.parentNode && svg.parentNode.clientWidth) || 1200;
    let W = 210, GX = 70;
    if (cols.length > 0 && PAD * 2 + cols.length * W + (cols.length - 1) * GX > avail) {
      GX = 44;
      W = Math.max(168, Math.floor((avail - PAD * 2 - (cols.length - 1) * GX) / cols.length));
    }
    const maxRows = Math.max(1, ...cols.map((c) => (c ? c.length : 0)));
    const height = PAD * 2 + maxRows * H + (maxRows - 1) * GY;
    const width = PAD * 2 + cols.length * W + Math.max(0, cols.length - 1) * GX;
    svg.setAttribute('width', width);
    svg.setAttribute('height', height);
    svg.setAttribute('viewBox', '0 0 ' + width + ' ' + height);

    const defs = el('defs');
    const marker = el('marker', { id: 'arrow', viewBox: '0 0 10 10', refX: '10', refY: '5', markerWidth: '7', markerHeight: '7', orient: 'auto' });
    marker.appendChild(el('path', { d: 'M0,0 L10,5 L0,10 z' }));
    defs.appendChild(marker);
    svg.appendChild(defs);

    const pos = new Map();
    cols.forEach((col, c) => {
      if (!col) return;
      const top = PAD + (height - 2 * PAD - (col.length * H + (col.length - 1) * GY)) / 2;
      col.forEach((o, r) => pos.set(o.uid, { x: PAD + c * (W + GX), y: top + r * (H + GY) }));
    });

    const edges = el('g', { class: 'edges' });
    for (const o of ops) {
      const to = pos.get(o.uid);
      for (const i of o.inputs || []) {
        const from = pos.get(i);
        if (!from) continue;
        const x1 = from.x + W, y1 = from.y + H / 2, x2 = to.x - 2, y2 = to.y + H / 2;
        const mx = (x1 + x2) / 2;
        edges.appendChild(el('path', {
          class: 'edge', 'data-from': i, 'data-to': o.uid,
          d: 'M' + x1 + ',' + y1 + ' C' + mx + ',' + y1 + ' ' + mx + ',' + y2 + ' ' + x2 + ',' + y2,
          'marker-end': 'url(#arrow)',
        }));
      }
    }
    svg.appendChild(edges);

    for (const o of ops) {
      const p = pos.get(o.uid);
      const act = activity(o);
      const g = el('g', { class: 'node ' + act, 'data-uid': o.uid, 'data-activity': act, transform: 'translate(' + p.x + ',' + p.y + ')' });
      g.appendChild(el('title', {}, o.uid + ' (' + o.kind + ', parallelism ' + o.parallelism + ')\n' +
        'backpressured ' + (o.backpressured_seconds || 0).toFixed(1) + ' s in this attempt'));
      g.appendChild(el('rect', { class: 'box', width: W, height: H, rx: 6 }));
      g.appendChild(el('text', { class: 'uid', x: 10, y: 19 }, o.uid));
      g.appendChild(el('text', { class: 'meta', x: 10, y: 34 }, o.kind + ' · parallelism ' + o.parallelism));
      // A source takes no records from another operator, and a sink
      // hands none to one: their in and out show as a dash.
      const inText = el('text', { x: 10, y: 52 }, 'in ');
      inText.appendChild(el('tspan', { class: 'records-in' }, o.kind === 'source' ? '–' : fmtInt(o.records_in)));
      inText.appendChild(el('tspan', { class: 'meta', dx: 6 }, o.kind === 'source' ? '' : fmtRate(o.records_in_per_second)));
      g.appendChild(inText);
      const outText = el('text', { x: 10, y: 68 }, 'out ');
      outText.appendChild(el('tspan', { class: 'records-out' }, o.kind === 'sink' ? '–' : fmtInt(o.records_out)));
      outText.appendChild(el('tspan', { class: 'meta', dx: 6 }, o.kind === 'sink' ? '' : fmtRate(o.records_out_per_second)));
      g.appendChild(outText);
      const ratio = o.backpressure_ratio == null ? 0 : o.backpressure_ratio;
      const label = act === 'busy'
        ? 'busy · backpressure ' + Math.round(ratio * 100) + '%'
        : act === 'backpressured' ? 'backpressured ' + Math.round(ratio * 100) + '%' : 'idle';
      g.appendChild(el('text', { class: 'state', x: 10, y: 86 }, label));
      g.appendChild(el('rect', { class: 'bpbar-bg', x: 10, y: 92, width: W - 20, height: 4, rx: 2 }));
      g.appendChild(el('rect', { class: 'bpbar', x: 10, y: 92, width: (W - 20) * Math.min(1, ratio), height: 4, rx: 2 }));
      svg.appendChild(g);
    }
  }

  function drawSpark(svg, values) {
    clear(svg);
    if (values.length < 2) return;
    const max = Math.max(1, ...values);
    const pts = values.map((v, i) => (i * 200 / (values.length - 1)).toFixed(1) + ',' + (38 - v / max * 34).toFixed(1));
    svg.appendChild(el('polyline', { points: pts.join(' '), fill: 'none', stroke: '#8250df', 'stroke-width': '1.5', 'vector-effect': 'non-scaling-stroke' }));
  }

  // ---------- distributed mode ----------
  function renderDistributed(job) {
    $('groups-panel').hidden = false;
    $('graph-panel').hidden = true;
    $('card-sink').hidden = true;
    $('card-source').hidden = true;
    const groups = job.groups || [];
    let restarts = 0;
    for (const g of groups) restarts += g.restarts || 0;
    setText('restarts', fmtInt(restarts));
    setText('last-failure-time', 'summed over the ' + groups.length + ' groups held here');
    setText('last-failure', '');
    const rb = job.rebalances || {};
    setText('groups-summary', groups.length + ' of ' + job.partition_groups + ' partition groups held · rebalances: ' +
      fmtInt(rb.assigned) + ' assigned, ' + fmtInt(rb.revoked) + ' revoked, ' + fmtInt(rb.lost) + ' lost · fenced: ' + fmtInt(job.fenced));
    const tbody = $('groups').tBodies[0];
    clear(tbody);
    for (const g of groups) {
      const tr = document.createElement('tr');
      tr.dataset.group = String(g.group);
      tr.append(td(String(g.group)), td(g.state), td(fmtTime(g.since)), td(g.pipeline_state || '–'),
        td(g.last_checkpoint ? g.last_checkpoint.id + ' at ' + fmtTime(g.last_checkpoint.time) : 'none yet'), td(fmtInt(g.restarts)));
      tbody.appendChild(tr);
    }
  }

  // ---------- checkpoints ----------
  function renderCheckpoints(cps, distributed) {
    const empty = $('cp-empty');
    if (cps.status !== 200 || !cps.body) {
      empty.hidden = false;
      empty.textContent = (cps.body && cps.body.error) || 'GET /api/v1/checkpoints answered ' + cps.status;
      clear($('cp-chart'));
      clear($('cp-table').tBodies[0]);
      $('cp-body').hidden = true;
      // Distributed mode: each group's last checkpoint is in the groups
      // table; there are no job-wide counts to show.
      $('card-checkpoints').hidden = distributed;
      return;
    }
    $('cp-body').hidden = false;
    $('card-checkpoints').hidden = false;
    const b = cps.body;
    const c = b.counts || {};
    setText('cp-completed', fmtInt(c.completed));
    setText('cp-failed', fmtInt(c.failed));
    setText('cp-inprogress', fmtInt(c.in_progress));
    const latest = b.latest && b.latest.completed;
    setText('cp-latest', latest
      ? 'latest ' + latest.id + ': ' + fmtMs(latest.duration_ms) + ', ' + fmtBytes(latest.state_size) + ' at ' + fmtTime(latest.trigger_time)
      : 'none completed yet');
    const hist = (b.history || []).slice().reverse(); // oldest first
    empty.hidden = hist.length > 0;
    empty.textContent = 'No checkpoint yet.';
    drawChart($('cp-chart'), hist);

    const tbody = $('cp-table').tBodies[0];
    clear(tbody);
    for (const cp of (b.history || []).slice(0, 12)) {
      const tr = document.createElement('tr');
      tr.className = cp.status;
      tr.append(td(cp.id + (cp.savepoint ? ' (savepoint)' : '')), td(cp.status), td(fmtTime(cp.trigger_time)),
        td(fmtMs(cp.duration_ms)), td(fmtMs(cp.alignment_ms)), td(fmtBytes(cp.state_size)),
        td(cp.last_ack ? cp.last_ack + ' +' + fmtMs(cp.last_ack_ms) : '–'), td(cp.failure || '', 'fail'));
      tbody.appendChild(tr);
    }
  }

  function drawChart(svg, hist) {
    clear(svg);
    const width = Math.max(320, svg.clientWidth || 900), height = 220;
    svg.setAttribute('viewBox', '0 0 ' + width + ' ' + height);
    if (hist.length === 0) return;
    const L = 56, R = 64, T = 28, B = 26;
    const pw = width - L - R, ph = height - T - B;
    const maxDur = Math.max(1, ...hist.map((h) => h.duration_ms || 0));
    const sizes = hist.filter((h) => h.status === 'COMPLETED' || h.status === 'SUBSUMED').map((h) => h.state_size || 0);
    const maxSize = Math.max(1, ...sizes);
    const band = pw / hist.length;
    const bw = Math.max(2, Math.min(28, band * 0.7));

    const axis = el('g', { class: 'axis' });
    for (const f of [0, 0.5, 1]) {
      const y = T + ph - f * ph;
      axis.appendChild(el('line', { x1: L, x2: L + pw, y1: y, y2: y }));
      axis.appendChild(el('text', { x: L - 6, y: y + 3, 'text-anchor': 'end' }, fmtMs(f * maxDur)));
      axis.appendChild(el('text', { x: L + pw + 6, y: y + 3 }, fmtBytes(f * maxSize)));
    }
    axis.appendChild(el('text', { x: L - 6, y: 12, 'text-anchor': 'end' }, 'duration'));
    axis.appendChild(el('text', { x: L + pw + 6, y: 12 }, 'state size'));
    const every = Math.ceil(hist.length / Math.max(1, Math.floor(pw / 44)));
    hist.forEach((h, i) => {
      if (i % every === 0 || i === hist.length - 1) {
        axis.appendChild(el('text', { x: L + band * (i + 0.5), y: height - 8, 'text-anchor': 'middle' }, String(h.id)));
      }
    });
    svg.appendChild(axis);

    const bars = el('g', { class: 'bars' });
    const sizePts = [];
    hist.forEach((h, i) => {
      const cx = L + band * (i + 0.5);
      const failed = h.status === 'FAILED';
      const hgt = Math.max(failed ? 6 : 1, (h.duration_ms || 0) / maxDur * ph);
      const cls = 'cp-bar ' + (failed ? 'failed' : h.status === 'IN_PROGRESS' ? 'in_progress' : h.savepoint ? 'savepoint' : 'completed');
      const bar = el('rect', { class: cls, x: cx - bw / 2, y: T + ph - hgt, width: bw, height: hgt, 'data-id': h.id, 'data-status': h.status });
      bar.appendChild(el('title', {}, (h.savepoint ? 'savepoint ' : 'checkpoint ') + h.id + ' ' + h.status +
        '\nduration ' + fmtMs(h.duration_ms) + ', alignment ' + fmtMs(h.alignment_ms) + ', size ' + fmtBytes(h.state_size) +
        (h.failure ? '\n' + h.failure : '')));
      bars.appendChild(bar);
      if (h.alignment_ms > 0) {
        const ah = Math.min(hgt, h.alignment_ms / maxDur * ph);
        bars.appendChild(el('rect', { class: 'cp-align', x: cx - bw / 4, y: T + ph - ah, width: bw / 2, height: Math.max(1, ah) }));
      }
      if (failed) bars.appendChild(el('text', { class: 'cp-fail-mark', x: cx, y: T + ph - hgt - 4 }, '✕'));
      if (h.status === 'COMPLETED' || h.status === 'SUBSUMED') sizePts.push([cx, T + ph - (h.state_size || 0) / maxSize * ph]);
    });
    svg.appendChild(bars);
    if (sizePts.length) {
      svg.appendChild(el('path', { class: 'cp-size', d: 'M' + sizePts.map((p) => p[0].toFixed(1) + ',' + p[1].toFixed(1)).join(' L') }));
      for (const p of sizePts) svg.appendChild(el('circle', { class: 'cp-size-pt', cx: p[0], cy: p[1], r: 2.5 }));
    }
  }

  poll();
})();
