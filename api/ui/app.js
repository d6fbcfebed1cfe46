// The discovery admin page: plain JavaScript, no dependencies, every asset
// served by the node. Data comes from the admin API (/discovery/admin/*);
// actions are the public set and cancel with the admin token, which is kept
// in sessionStorage (this tab only). Every value from the API is inserted
// as text, never as HTML.
'use strict';
(() => {
  const $ = (id) => document.getElementById(id);
  const TOKEN_KEY = 'discovery.admin_token';
  const PAGE = 100;
  const state = {
    token: sessionStorage.getItem(TOKEN_KEY) || '',
    version: null, // registry change count last seen
    status: null, // last admin status
    view: null, // {kind, update()}
    needToken: false,
  };

  // h builds an element: attrs (class, text, on*, others as attributes) and
  // children (nodes or text).
  function h(tag, attrs, ...kids) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === 'class') el.className = v;
      else if (k === 'text') el.textContent = v;
      else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? '' : String(v));
    }
    for (const c of kids.flat()) {
      if (c === null || c === undefined || c === false) continue;
      el.append(c instanceof Node ? c : String(c));
    }
    return el;
  }

  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

  class APIError extends Error {
    constructor(code, message) {
      super(message);
      this.code = code;
    }
  }

  function headers() {
    const hd = {};
    if (state.token) hd.Authorization = 'Bearer ' + state.token;
    return hd;
  }

  // api GETs an admin path and returns data, or throws APIError.
  async function api(path, params, opts) {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(params || {})) {
      if (v !== undefined && v !== null && v !== '') q.set(k, String(v));
    }
    const url = path + (q.toString() ? '?' + q : '');
    const hd = headers();
    if (opts && opts.holdMs) hd['x1-bmspy-timeout'] = String(opts.holdMs);
    let resp;
    try {
      resp = await fetch(url, { headers: hd, cache: 'no-store', signal: opts && opts.signal });
    } catch (e) {
      throw new APIError(-1, 'node unreachable: ' + e.message);
    }
    let body;
    try {
      body = await resp.json();
    } catch (e) {
      throw new APIError(-1, 'HTTP ' + resp.status + ': not a discovery answer');
    }
    if (body.code !== 0) {
      if (body.code === -401 || body.code === -403) askToken(body.message);
      throw new APIError(body.code, body.message || String(body.code));
    }
    return body.data;
  }

  // write POSTs a public write (set, cancel) with the admin token.
  async function write(path, form) {
    const hd = headers();
    hd['Content-Type'] = 'application/x-www-form-urlencoded';
    const resp = await fetch(path, { method: 'POST', headers: hd, body: new URLSearchParams(form).toString() });
    const body = await resp.json().catch(() => ({ code: -1, message: 'HTTP ' + resp.status }));
    if (body.code !== 0) {
      if (body.code === -401 || body.code === -403) askToken(body.message);
      throw new APIError(body.code, body.message || String(body.code));
    }
  }

  // ---- formatting

  function fmtAge(sec) {
    sec = Math.max(0, Math.floor(sec));
    if (sec < 60) return sec + 's';
    if (sec < 3600) return Math.floor(sec / 60) + 'm ' + (sec % 60) + 's';
    if (sec < 86400) return Math.floor(sec / 3600) + 'h ' + Math.floor((sec % 3600) / 60) + 'm';
    return Math.floor(sec / 86400) + 'd ' + Math.floor((sec % 86400) / 3600) + 'h';
  }
  function fmtTime(ns) {
    if (!ns) return '-';
    return new Date(ns / 1e6).toISOString().replace('T', ' ').slice(0, 19) + 'Z';
  }
  function statusBadge(s) {
    if (s === 1) return h('span', { class: 'badge up', text: 'UP' });
    if (s === 2) return h('span', { class: 'badge waiting', text: 'WAITING' });
    return h('span', { class: 'badge bad', text: String(s) });
  }
  const num = (v) => h('td', { class: 'num', text: String(v) });
  // table: cols [{label, num, narrow}], rows of td elements. Each cell
  // carries its column's label, shown beside it on a narrow screen, where
  // rows stack (style.css).
  function table(cols, rows, rowAttrs) {
    for (const r of rows) {
      r.forEach((td, i) => { if (cols[i]) td.setAttribute('data-label', cols[i].label); });
    }
    return h('div', { class: 'table-wrap' },
      h('table', {},
        h('thead', {}, h('tr', {}, cols.map((c) => h('th', { scope: 'col', class: c.num ? 'num' : (c.narrow ? 'hide-narrow' : null), text: c.label })))),
        h('tbody', {}, rows.map((r, i) => h('tr', rowAttrs ? rowAttrs(i) : {}, r)))));
  }
  // put replaces el's children, leaving out null ones.
  function put(el, ...kids) {
    el.replaceChildren(...kids.flat().filter((k) => k !== null && k !== undefined && k !== false));
  }
  function kv(pairs) {
    return h('dl', { class: 'kv' }, pairs.flatMap(([k, v]) => [h('dt', { text: k }), h('dd', {}, v)]));
  }
  function card(title, ...body) {
    return h('section', { class: 'card' }, h('h2', { text: title }), body);
  }
  function wideCard(title, ...body) {
    return h('section', { class: 'card wide' }, h('h2', { text: title }), body);
  }

  // ---- banner, dialog, token

  function showError(msg) {
    const b = $('banner');
    b.className = 'banner';
    b.textContent = msg;
    b.hidden = false;
  }
  function showInfo(msg) {
    const b = $('banner');
    b.className = 'banner info';
    b.textContent = msg;
    b.hidden = false;
  }
  function clearBanner() {
    $('banner').hidden = true;
  }

  // dialog shows a modal and resolves true on OK. body: nodes.
  function dialog(title, body, okText, danger) {
    const d = $('dialog');
    $('dialog-title').textContent = title;
    $('dialog-body').replaceChildren(...body);
    const ok = $('dialog-ok');
    ok.textContent = okText || 'OK';
    ok.className = danger ? 'danger' : '';
    return new Promise((resolve) => {
      const done = () => {
        d.removeEventListener('close', done);
        resolve(d.returnValue === 'ok');
      };
      d.returnValue = '';
      d.addEventListener('close', done);
      d.showModal();
      const first = $('dialog-body').querySelector('input, textarea, select');
      (first || ok).focus();
    });
  }
  $('dialog-cancel').addEventListener('click', () => $('dialog').close(''));

  let asking = false;
  async function askToken(message) {
    state.needToken = true;
    if (asking) return;
    asking = true;
    const input = h('input', { type: 'password', id: 'token-input', autocomplete: 'off', 'aria-label': 'admin token' });
    const ok = await dialog('Admin token', [
      h('p', { text: message || 'This node requires the admin token (security.admin_token).' }),
      h('p', { class: 'muted', text: 'It is kept in this tab only.' }),
      input,
    ], 'Use token');
    asking = false;
    if (ok && input.value.trim()) {
      state.token = input.value.trim();
      sessionStorage.setItem(TOKEN_KEY, state.token);
      state.needToken = false;
      clearBanner();
      refresh();
      if (tokenWake) tokenWake();
    }
  }
  $('token-button').addEventListener('click', () => askToken('Admin token for this node: needed for the actions, and for every view when the node has one.'));

  // ---- views

  async function loadStatus() {
    state.status = await api('/discovery/admin/status');
    const n = state.status.node;
    $('node-badge').textContent = (n.hostname || n.addr) + ' · ' + n.env + ' · ' + n.zone + (n.ready ? '' : ' · NOT READY');
    return state.status;
  }

  function overviewView() {
    const root = h('div', {});
    const update = async () => {
      const st = await loadStatus();
      const n = st.node, r = st.registry;
      const envs = Object.keys(r.instances || {}).sort();
      put(root,
        h('h1', { text: 'Overview' }),
        h('div', { class: 'grid' },
          card('This node', kv([
            ['hostname', n.hostname], ['address', n.addr + (n.https ? '  (https ' + n.https + ')' : '')],
            ['env / zone / region', n.env + ' / ' + n.zone + ' / ' + n.region], ['version', n.version || '-'],
            ['uptime', fmtAge(n.uptime_seconds)], ['ready', n.ready ? h('span', { class: 'badge up', text: 'ready' }) : h('span', { class: 'badge bad', text: 'not ready' })],
          ])),
          card('Self-preservation', kv([
            ['state', r.protected ? h('span', { class: 'badge bad', id: 'protect-state', text: 'ON: evictions held back' }) : h('span', { class: 'badge up', id: 'protect-state', text: 'off' })],
            ['renews last minute', String(r.renews_last_minute)], ['expected per minute', String(r.expected_renews_per_minute)],
            ['threshold', String(r.renew_threshold_per_minute)], ['evictions', String(r.evictions)],
          ])),
          card('Registry', envs.length === 0 ? h('p', { class: 'muted', text: 'empty' }) :
            table([{ label: 'env' }, { label: 'apps', num: true }, { label: 'instances', num: true }],
              envs.map((e) => [h('td', { text: e }), num(r.apps[e] || 0), num(r.instances[e])])),
          kv([['tombstones', String(r.tombstones)], ['refused (full)', Object.entries(r.full_refusals || {}).filter(([, v]) => v > 0).map(([k, v]) => k + ' ' + v).join(', ') || 'none']])),
          card('Clients', kv([
            ['parked polls', st.polls.parked + ' / ' + st.polls.max],
            ['connections', st.connections.open + ' / ' + st.connections.max + ' (per IP ' + st.connections.max_per_ip + ')'],
            ['anti-entropy', st.anti_entropy.repairs + ' repairs, ' + st.anti_entropy.rounds_ok + ' rounds ok, ' + st.anti_entropy.rounds_failed + ' failed'],
          ]))),
        wideCard('Cluster members',
          table([{ label: 'name' }, { label: 'address' }, { label: 'zone' }, { label: 'state' }],
            st.members.map((m) => [h('td', { text: m.name + (m.self ? ' (this node)' : '') }), h('td', { text: m.addr }), h('td', { text: m.zone }),
              h('td', {}, h('span', { class: 'badge ' + (m.state === 'up' ? 'up' : m.state), text: m.state }))]))),
        wideCard('Replication',
          st.replication.length === 0 ? h('p', { class: 'muted', text: 'no peers' }) :
            table([{ label: 'link' }, { label: 'kind' }, { label: 'address' }, { label: 'queue', num: true }, { label: 'state' },
              { label: 'acked', num: true }, { label: 'failed', num: true }, { label: 'last lag ms', num: true, narrow: true }],
            st.replication.map((p) => [h('td', { text: p.name }), h('td', { text: p.kind }), h('td', { text: p.addr }), num(p.queue),
              h('td', {}, h('span', { class: 'badge ' + (p.failing ? 'bad' : 'up'), text: p.failing ? 'failing' : 'ok' })),
              num(p.acked), num(p.failed), h('td', { class: 'num hide-narrow', text: p.last_lag_ms.toFixed(2) })]))),
        st.legacy.length === 0 ? null : wideCard('Legacy nodes (migration)',
          table([{ label: 'address' }, { label: 'zone' }, { label: 'state' }, { label: 'last pull' }, { label: 'forwarded', num: true },
            { label: 'failed', num: true }, { label: 'received', num: true }, { label: 'repaired', num: true }],
          st.legacy.map((l) => [h('td', { text: l.addr }), h('td', { text: l.zone || n.zone }),
            h('td', {}, h('span', { class: 'badge ' + (l.up ? 'up' : 'bad'), text: l.up ? 'up' : 'down', title: l.last_error || null })),
            h('td', { text: l.last_pull ? fmtTime(l.last_pull) : 'never' }), num(l.ops_forwarded), num(l.ops_failed), num(l.ops_received), num(l.items_repaired)]))));
    };
    return { kind: 'overview', root, update, tick: 2000 };
  }

  function appsView(params) {
    const q = {
      env: params.get('env') || '', zone: params.get('zone') || '', status: params.get('status') || '',
      prefix: params.get('prefix') || '', sort: params.get('sort') || 'appid', offset: Number(params.get('offset')) || 0,
    };
    const envSel = h('select', { id: 'f-env' }, h('option', { value: '', text: 'all' }));
    const zoneIn = h('input', { id: 'f-zone', type: 'text', value: q.zone, placeholder: 'any', size: 10 });
    const statusSel = h('select', { id: 'f-status' },
      [['', 'any'], ['up', 'has UP'], ['waiting', 'has WAITING'], ['stale', 'has stale']].map(([v, t]) => h('option', { value: v, text: t, selected: v === q.status })));
    const prefixIn = h('input', { id: 'f-prefix', type: 'search', value: q.prefix, placeholder: 'appid prefix', size: 18 });
    const sortSel = h('select', { id: 'f-sort' },
      [['appid', 'appid'], ['instances', 'instances'], ['env', 'env']].map(([v, t]) => h('option', { value: v, text: t, selected: v === q.sort })));
    const result = h('div', { id: 'apps-result' });
    const root = h('div', {},
      h('h1', { text: 'Apps' }),
      h('form', { class: 'filters', role: 'search', onsubmit: (e) => { e.preventDefault(); changed(); } },
        h('label', {}, 'env', envSel), h('label', {}, 'zone', zoneIn), h('label', {}, 'status', statusSel),
        h('label', {}, 'search', prefixIn), h('label', {}, 'sort', sortSel)),
      result);
    let timer = null;
    function changed() {
      q.env = envSel.value; q.zone = zoneIn.value.trim(); q.status = statusSel.value; q.prefix = prefixIn.value.trim(); q.sort = sortSel.value;
      q.offset = 0;
      syncHash();
      update();
    }
    function syncHash() {
      const p = new URLSearchParams();
      for (const [k, v] of Object.entries(q)) if (v) p.set(k, String(v));
      history.replaceState(null, '', '#/apps' + (p.toString() ? '?' + p : ''));
    }
    const soon = () => { clearTimeout(timer); timer = setTimeout(changed, 250); };
    for (const el of [envSel, statusSel, sortSel]) el.addEventListener('change', changed);
    for (const el of [zoneIn, prefixIn]) el.addEventListener('input', soon);
    async function update() {
      const st = state.status || await loadStatus();
      const envs = Object.keys(st.registry.apps || {}).sort();
      if (envSel.options.length !== envs.length + 1) {
        envSel.replaceChildren(h('option', { value: '', text: 'all' }), envs.map((e) => h('option', { value: e, text: e })));
      }
      envSel.value = q.env;
      const page = await api('/discovery/admin/apps', {
        env: q.env, zone: q.zone, status: q.status, prefix: q.prefix, sort: q.sort === 'appid' ? '' : q.sort,
        offset: q.offset, limit: PAGE,
      });
      const rows = page.apps.map((a) => [
        h('td', { text: a.env }),
        h('td', {}, h('a', { href: '#/app/' + encodeURIComponent(a.env) + '/' + encodeURIComponent(a.appid), class: 'app-link', text: a.appid })),
        num(a.instances), num(a.up), num(a.waiting),
        h('td', { class: 'num' }, a.stale ? h('span', { class: 'badge stale', text: String(a.stale) }) : '0'),
        h('td', { class: 'hide-narrow', text: Object.entries(a.zones).sort().map(([z, c]) => z + ': ' + c.up + ' up' + (c.waiting ? ', ' + c.waiting + ' waiting' : '')).join('; ') }),
      ]);
      const last = Math.min(page.offset + page.apps.length, page.total);
      put(result,
        page.total === 0 ? h('p', { class: 'muted', text: 'no app matches' }) :
          table([{ label: 'env' }, { label: 'appid' }, { label: 'instances', num: true }, { label: 'UP', num: true }, { label: 'WAITING', num: true },
            { label: 'stale', num: true }, { label: 'zones', narrow: true }], rows),
        h('div', { class: 'pager' },
          h('button', { type: 'button', class: 'ghost small', disabled: q.offset === 0, onclick: () => { q.offset = Math.max(0, q.offset - PAGE); syncHash(); update(); } }, 'previous'),
          h('span', { class: 'muted', id: 'apps-count', text: page.total ? (page.offset + 1) + '-' + last + ' of ' + page.total + ' apps' : '' }),
          h('button', { type: 'button', class: 'ghost small', disabled: last >= page.total, onclick: () => { q.offset += PAGE; syncHash(); update(); } }, 'next')));
    }
    return { kind: 'apps', root, update };
  }

  function appView(env, appid) {
    const root = h('div', {});
    let fetched = 0;
    let detail = null;
    async function act(what, ins, form, path) {
      try {
        await write(path || '/discovery/set', form);
        showInfo(what + ' ' + ins.hostname + ': done; replicated to every node.');
      } catch (e) {
        showError(what + ' ' + ins.hostname + ' failed (' + e.code + '): ' + e.message);
      }
      refresh();
    }
    const key = (ins) => ({ zone: ins.zone, env: ins.env, appid: ins.appid, hostname: ins.hostname });
    async function setStatus(ins, s) {
      const name = s === 1 ? 'UP' : 'WAITING';
      if (await dialog('Set ' + name, [h('p', { text: 'Set ' + ins.hostname + ' of ' + ins.appid + ' (' + ins.zone + ') to ' + name + '?' })], 'Set ' + name)) {
        await act('set ' + name, ins, { ...key(ins), status: String(s) });
      }
    }
    async function editMeta(ins) {
      const ta = h('textarea', { id: 'meta-input', 'aria-label': 'metadata JSON' });
      ta.value = JSON.stringify(ins.metadata || {}, null, 2);
      const err = h('p', { class: 'err', role: 'alert' });
      for (;;) {
        if (!await dialog('Metadata of ' + ins.hostname, [h('p', { class: 'muted', text: 'A JSON object of strings; it replaces the metadata.' }), ta, err], 'Save')) return;
        try {
          const m = JSON.parse(ta.value);
          if (m === null || typeof m !== 'object' || Array.isArray(m)) throw new Error('not a JSON object');
          await act('metadata of', ins, { ...key(ins), metadata: JSON.stringify(m) });
          return;
        } catch (e) {
          err.textContent = e.message;
        }
      }
    }
    async function cancel(ins) {
      if (await dialog('Cancel instance', [h('p', { text: 'Cancel ' + ins.hostname + ' of ' + ins.appid + ' (' + ins.zone + ')? It is removed from every node; a running instance registers again at its next renew.' })], 'Cancel instance', true)) {
        await act('cancel', ins, key(ins), '/discovery/cancel');
      }
    }
    function render() {
      if (!detail) return;
      const elapsed = (Date.now() - fetched) / 1000;
      const total = detail.nodes.length;
      const rows = detail.instances.map((ins) => {
        const age = ins.renew_age_seconds + elapsed;
        const stale = age > detail.stale_after_seconds;
        const meta = Object.entries(ins.metadata || {}).sort();
        return [
          h('td', { text: ins.hostname }), h('td', { text: ins.zone }), h('td', {}, statusBadge(ins.status)),
          h('td', {}, h('ul', { class: 'addrs' }, ins.addrs.map((a) => h('li', { text: a })))),
          h('td', { class: 'hide-narrow', text: ins.version || '-' }),
          h('td', {}, meta.length ? h('ul', { class: 'meta' }, meta.map(([k, v]) => h('li', { text: k + '=' + v }))) : h('span', { class: 'muted', text: '-' })),
          h('td', { class: 'num' }, stale ? h('span', { class: 'badge stale', text: fmtAge(age) }) : fmtAge(age)),
          h('td', { class: 'hide-narrow nowrap', text: fmtTime(ins.reg_timestamp) }), h('td', { class: 'hide-narrow nowrap', text: fmtTime(ins.up_timestamp) }),
          h('td', { class: 'num', title: ins.held_by.join(', ') || null, text: ins.held_by.length + '/' + total }),
          h('td', {}, h('div', { class: 'actions' },
            ins.status === 1 ? h('button', { type: 'button', class: 'small ghost', onclick: () => setStatus(ins, 2) }, 'Set WAITING')
              : h('button', { type: 'button', class: 'small ghost', onclick: () => setStatus(ins, 1) }, 'Set UP'),
            h('button', { type: 'button', class: 'small ghost', onclick: () => editMeta(ins) }, 'Metadata'),
            h('button', { type: 'button', class: 'small danger', onclick: () => cancel(ins) }, 'Cancel'))),
        ];
      });
      put(root,
        h('p', {}, h('a', { href: '#/apps', text: '← apps' })),
        h('h1', { text: appid }),
        h('p', { class: 'muted', text: 'env ' + env + ' · ' + detail.instances.length + ' instances · changed ' + fmtTime(detail.latest_timestamp) + ' · held by: the nodes with the same version, of ' + total }),
        detail.instances.length === 0 ? h('p', { class: 'muted', text: 'no instance' }) :
          table([{ label: 'hostname' }, { label: 'zone' }, { label: 'status' }, { label: 'addrs' }, { label: 'version', narrow: true }, { label: 'metadata' },
            { label: 'last renew', num: true }, { label: 'registered', narrow: true }, { label: 'up since', narrow: true }, { label: 'held by', num: true }, { label: 'actions' }],
          rows, (i) => ({ class: (detail.instances[i].renew_age_seconds + elapsed > detail.stale_after_seconds) ? 'stale' : null, 'data-hostname': detail.instances[i].hostname })));
    }
    async function update() {
      try {
        detail = await api('/discovery/admin/app', { env, appid });
      } catch (e) {
        if (e.code === -404) {
          detail = { env, appid, nodes: [], instances: [], stale_after_seconds: 60, latest_timestamp: 0 };
        } else {
          throw e;
        }
      }
      fetched = Date.now();
      render();
    }
    return { kind: 'app', root, update, tick: 1000, onTick: render };
  }

  // ---- router and refresh

  function route() {
    const hash = location.hash || '#/';
    const [path, query] = hash.slice(1).split('?');
    const params = new URLSearchParams(query || '');
    const parts = path.split('/').filter(Boolean);
    let v;
    if (parts[0] === 'apps') v = appsView(params);
    else if (parts[0] === 'app' && parts.length >= 3) v = appView(decodeURIComponent(parts[1]), decodeURIComponent(parts.slice(2).join('/')));
    else v = overviewView();
    for (const [id, kind] of [['nav-overview', 'overview'], ['nav-apps', 'apps']]) {
      const a = $(id);
      if (v.kind === kind || (kind === 'apps' && v.kind === 'app')) a.setAttribute('aria-current', 'page');
      else a.removeAttribute('aria-current');
    }
    state.view = v;
    $('view').replaceChildren(v.root);
    refresh();
  }

  let refreshing = null;
  let again = false;
  // refresh updates the current view; calls that come while one runs are
  // folded into one more.
  async function refresh() {
    if (refreshing) {
      again = true;
      return refreshing;
    }
    refreshing = (async () => {
      do {
        again = false;
        const v = state.view;
        try {
          await v.update();
          if (!state.needToken) clearBannerIfError();
        } catch (e) {
          if (e.code !== -401 && e.code !== -403) showError(e.message);
        }
      } while (again);
      refreshing = null;
    })();
    return refreshing;
  }
  function clearBannerIfError() {
    const b = $('banner');
    if (!b.hidden && b.className === 'banner') b.hidden = true;
  }

  // live holds a changes request open on the node; every change of the
  // registry refreshes the view at once. The first answer (or the first
  // after an outage) refreshes too: changes may have come meanwhile.
  let tokenWake = null;
  function waitToken(ms) {
    return new Promise((resolve) => {
      const t = setTimeout(resolve, ms);
      tokenWake = () => { clearTimeout(t); resolve(); };
    });
  }
  async function live() {
    const badge = $('live');
    let resync = true;
    for (;;) {
      try {
        const d = await api('/discovery/admin/changes', { since: resync ? '' : state.version }, { holdMs: 20000 });
        badge.className = 'live on';
        if (resync || d.version !== state.version) refresh();
        state.version = d.version;
        resync = false;
      } catch (e) {
        badge.className = 'live';
        resync = true;
        if (e.code === -401 || e.code === -403) await waitToken(5000);
        else await sleep(1000);
      }
    }
  }

  // tick: periodic refresh (overview counters) and re-render (ages).
  setInterval(() => {
    const v = state.view;
    if (!v || document.hidden) return;
    v.ticks = (v.ticks || 0) + 1;
    if (v.onTick) v.onTick();
    if (v.kind === 'overview' && v.ticks % 2 === 0) refresh();
  }, 1000);

  window.addEventListener('hashchange', () => { clearBanner(); route(); });
  route();
  live();
})();
